/// Stochastic gradient descent with momentum, the exact update of
/// `torch.optim.SGD` (dampening 0):
///
///     g ← g + wd·w;  buf ← μ·buf + g (buf ← g on the first step)
///     w ← w − lr·(g + μ·buf)  with Nesterov,  w ← w − lr·buf  without.
///
/// `noBiasDecay` skips weight decay on biases and BN γ/β (He et al. 2019 §3.1).
public final class SGD {
    public let store: ParameterStore
    public var momentum: Float
    public var nesterov: Bool
    public var weightDecay: Float
    public var noBiasDecay: Bool
    /// The momentum buffer, laid out like `store`'s flat buffers.
    public let momentumBuffer: UnsafeMutablePointer<Float>
    /// Whether the momentum buffer holds a value yet (false before the first step).
    public var hasMomentum = false

    public init(store: ParameterStore, momentum: Float = 0.9, nesterov: Bool = false,
                weightDecay: Float = 0, noBiasDecay: Bool = false) {
        self.store = store
        self.momentum = momentum; self.nesterov = nesterov
        self.weightDecay = weightDecay; self.noBiasDecay = noBiasDecay
        momentumBuffer = .allocate(capacity: max(store.count, 1))
        momentumBuffer.initialize(repeating: 0, count: max(store.count, 1))
    }

    deinit { momentumBuffer.deallocate() }

    /// One update at learning rate `lr` from the gradients in `store`.
    public func step(lr: Float) {
        let first = !hasMomentum
        for (p, off) in zip(store.parameters, store.offsets) {
            let wd = (noBiasDecay && p.isBiasOrNorm) ? 0 : weightDecay
            let w = store.values + off, g = store.grads + off, buf = momentumBuffer + off
            let mu = momentum
            for i in 0..<p.count {
                var gi = g[i]
                if wd != 0 { gi += wd * w[i] }
                if mu != 0 {
                    let b = first ? gi : mu * buf[i] + gi
                    buf[i] = b
                    gi = nesterov ? gi + mu * b : b
                }
                w[i] -= lr * gi
            }
        }
        hasMomentum = true
    }
}
