import Foundation
import Tricks

/// Conv → BatchNorm → leaky ReLU (slope 0.1), YOLOv3's unit.
public final class ConvUnit {
    public let conv: Conv2d
    public let bn: BatchNorm2d
    let act = LeakyReLU(slope: 0.1)

    public init(_ name: String, in cin: Int, out cout: Int, kernel: Int, stride: Int = 1, workspace: Workspace) {
        conv = Conv2d(name: name + ".conv", in: cin, out: cout, kernel: kernel, stride: stride, workspace: workspace)
        bn = BatchNorm2d(name + ".bn", cout)
    }

    /// When set, forward and backward time (or check) each layer into it.
    public var profiler: StepProfiler?
    private var input: Tensor?, convOut: Tensor?

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let p = profiler
        let c = conv.forward(x, mode: mode, profiler: p)
        input = x; convOut = c
        return act.forward(bn.forward(c, mode: mode, profiler: p), mode: mode, profiler: p)
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let p = profiler, c = convOut!
        return conv.backward(bn.backward(act.backward(dy, input: c, profiler: p), input: c, profiler: p), input: input!, profiler: p)
    }
    public var parameters: [Parameter] { conv.parameters + bn.parameters }
    public var state: [StateTensor] { conv.state + bn.state }
}

/// A small YOLOv3-style detector on the library's layers: a stem and five stride-2 residual
/// blocks (`BasicBlock`, strides 2…32), and three heads at strides 8, 16 and 32 joined top-down
/// by 1×1 convolutions, nearest upsampling and channel concatenation, as in YOLOv3. Each head
/// ends in a 1×1 convolution with bias giving `A·(5 + K)` channels (see `YOLOLoss`).
public final class YOLONet: @unchecked Sendable {
    public let numClasses: Int
    public let anchorsPerHead: Int
    public let width: Int
    public let workspace = Workspace()
    public let stem: ConvUnit
    public let blocks: [BasicBlock]
    /// Per head, from stride 32 to stride 8: two units (1×1 reduce, 3×3), the output conv.
    public let heads: [(reduce: ConvUnit, expand: ConvUnit, out: Conv2d)]
    /// 1×1 units that feed the upsampled path of strides 16 and 8.
    public let lateral: [ConvUnit]
    let up = [Upsample2x(), Upsample2x()]
    let cat = [Concat(), Concat()]
    private let gsum = [Tensor(shape: [0]), Tensor(shape: [0]), Tensor(shape: [0])]

    /// - Parameter width: channels of the stem; the blocks have 2×, 4×, 8×, 16×, 16× as many.
    public init(numClasses: Int, anchorsPerHead: Int = 3, width: Int = 16, inChannels: Int = 3, seed: UInt64 = 0) {
        self.numClasses = numClasses; self.anchorsPerHead = anchorsPerHead; self.width = width
        let w = width, ws = workspace
        stem = ConvUnit("stem", in: inChannels, out: w, kernel: 3, workspace: ws)
        stem.conv.needsInputGrad = false
        let ch = [w, 2 * w, 4 * w, 8 * w, 16 * w, 16 * w]
        blocks = (0..<5).map { BasicBlock("backbone.\($0)", ch[$0], ch[$0 + 1], stride: 2, workspace: ws) }
        let out = anchorsPerHead * (5 + numClasses)
        // Head inputs: C5 (16w); C4 (16w) + lateral(8w → up); C3 (8w) + lateral(4w → up).
        let headIn = [ch[5], ch[4] + 4 * w, ch[3] + 2 * w], mid = [8 * w, 4 * w, 2 * w]
        heads = (0..<3).map { h in
            (ConvUnit("head\(h).reduce", in: headIn[h], out: mid[h], kernel: 1, workspace: ws),
             ConvUnit("head\(h).expand", in: mid[h], out: 2 * mid[h], kernel: 3, workspace: ws),
             Conv2d(name: "head\(h).out", in: 2 * mid[h], out: out, kernel: 1, bias: true, workspace: ws))
        }
        lateral = [ConvUnit("lateral0", in: mid[0], out: 4 * w, kernel: 1, workspace: ws),
                   ConvUnit("lateral1", in: mid[1], out: 2 * w, kernel: 1, workspace: ws)]
        store = ParameterStore((stem.parameters + blocks.flatMap(\.parameters)
            + heads.flatMap { $0.reduce.parameters + $0.expand.parameters + $0.out.parameters }
            + lateral.flatMap(\.parameters)))
        initialize(seed: seed)
    }

    public let store: ParameterStore

    /// When set, forward and backward time (or check) every layer into it (`tricks-detect bench --profile`).
    public var profiler: StepProfiler? {
        didSet {
            blocks.forEach { $0.profiler = profiler }
            ([stem] + heads.flatMap { [$0.reduce, $0.expand] } + lateral).forEach { $0.profiler = profiler }
        }
    }

    public var state: [StateTensor] {
        stem.state + blocks.flatMap(\.state) + heads.flatMap { $0.reduce.state + $0.expand.state + $0.out.state }
            + lateral.flatMap(\.state)
    }

    public var norms: [BatchNorm2d] {
        [stem.bn] + blocks.flatMap(\.norms) + heads.flatMap { [$0.reduce.bn, $0.expand.bn] } + lateral.map(\.bn)
    }

    /// He-normal convolutions (fan-out, as torchvision's ResNet), BN γ = 1 and β = 0, the output
    /// convolutions small with their objectness bias at −4 (few objects at start, as in
    /// RetinaNet's prior).
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(key: [seed, 0x594F_4C4F])
        let convs = [stem.conv] + blocks.flatMap { b in [b.conv1, b.conv2] + (b.downsample.map { [$0.conv] } ?? []) }
            + heads.flatMap { [$0.reduce.conv, $0.expand.conv] } + lateral.map(\.conv)
        for c in convs { Initializer.kaimingNormal(c.weight, fanOut: true, rng: &rng) }
        for bn in norms {
            Initializer.constant(bn.weight, 1); Initializer.constant(bn.bias, 0)
            bn.runningMean.update(repeating: 0, count: bn.channels); bn.runningVar.update(repeating: 1, count: bn.channels)
        }
        for h in heads {
            for i in 0..<h.out.weight.count { h.out.weight.value[i] = Float(0.01 * rng.normal()) }
            Initializer.constant(h.out.bias!, 0)
            for a in 0..<anchorsPerHead { h.out.bias!.value[a * (5 + numClasses) + 4] = -4 }
        }
    }

    /// The three heads' strides, coarsest first (matching `forward`'s outputs).
    public static let strides = [32, 16, 8]

    /// x: `(N, C, S, S)` with S a multiple of 32 → head outputs at strides 32, 16, 8,
    /// `(N, A·(5+K), S/stride, S/stride)` each.
    public func forward(_ x: Tensor, mode: Mode) -> [Tensor] {
        precondition(x.shape[2] % 32 == 0 && x.shape[3] % 32 == 0, "YOLONet: input sides must be multiples of 32, got \(x.shape)")
        var a = stem.forward(x, mode: mode)
        var taps: [Tensor] = []
        for b in blocks { a = b.forward(a, mode: mode); taps.append(a) }
        // Strides: taps[2] = 8, taps[3] = 16, taps[4] = 32.
        var outs: [Tensor] = []
        var r = heads[0].reduce.forward(taps[4], mode: mode)
        outs.append(heads[0].out.forward(heads[0].expand.forward(r, mode: mode), mode: mode, profiler: profiler))
        for h in 1...2 {
            let l = up[h - 1].forward(lateral[h - 1].forward(r, mode: mode), mode: mode)
            let joined = cat[h - 1].forward(taps[4 - h], l)
            r = heads[h].reduce.forward(joined, mode: mode)
            outs.append(heads[h].out.forward(heads[h].expand.forward(r, mode: mode), mode: mode, profiler: profiler))
        }
        return outs
    }

    /// Gradients of the three outputs (as `forward` returned them) → adds into every parameter
    /// gradient.
    public func backward(_ dOut: [Tensor]) {
        // Head 2 (stride 8) back to its reduce input, then down to head 0.
        var dr: Tensor? = nil              // gradient reaching heads[h].reduce's output from the head above
        var dTap = [Tensor?](repeating: nil, count: 5)
        for h in stride(from: 2, through: 0, by: -1) {
            var g = heads[h].expand.backward(heads[h].out.backward(dOut[h], input: dOut[h], profiler: profiler))
            if let extra = dr { g = sum(g, extra, into: gsum[h]) }
            let dj = heads[h].reduce.backward(g)
            if h == 0 { dTap[4] = dj; break }
            let (dc, dl) = cat[h - 1].backward(dj)
            dTap[4 - h] = dc
            dr = lateral[h - 1].backward(up[h - 1].backward(dl))
        }
        // Backbone: a block's output gradient is its head tap plus the next block's input gradient.
        var g: Tensor? = nil
        for i in stride(from: 4, through: 0, by: -1) {
            var dy: Tensor
            switch (dTap[i], g) {
            case let (t?, n?): dy = sum(t, n, into: tapSum[i])
            case let (t?, nil): dy = t
            case let (nil, n?): dy = n
            default: fatalError("unreachable")
            }
            g = blocks[i].backward(dy)
        }
        _ = stem.backward(g!)
    }

    private let tapSum = (0..<5).map { _ in Tensor(shape: [0]) }

    /// a + b into `out` (a fresh buffer, so neither operand's owner overwrites it).
    private func sum(_ a: Tensor, _ b: Tensor, into out: Tensor) -> Tensor {
        precondition(a.shape == b.shape)
        out.resize(a.shape)
        for i in 0..<a.count { out.data[i] = a.data[i] + b.data[i] }
        return out
    }
}
