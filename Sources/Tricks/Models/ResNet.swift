import Foundation

/// The residual block of He et al. 2016 (arXiv 1512.03385) with two 3×3 convolutions:
/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, where the shortcut is the
/// identity or, when the shape changes, a 1×1 convolution + BN (`downsample.0/1`).
public final class BasicBlock: Layer {
    public let conv1: Conv2d, bn1: BatchNorm2d
    public let conv2: Conv2d, bn2: BatchNorm2d
    public let downsample: (conv: Conv2d, bn: BatchNorm2d)?
    private let dsum = Tensor(shape: [0])
    private var input: Tensor?
    /// When set, forward and backward time (or check) every layer into it.
    public var profiler: StepProfiler?

    /// `gradients`, when given, are the tensors the block's backward writes into: one for the
    /// batch norms' and one for the convolutions' input gradients, both consumed within the
    /// block, and `output` for the block's own input gradient, which must outlive the backward
    /// of the block after it (whose input gradient is this block's `dy`).
    public init(_ name: String, _ cin: Int, _ cout: Int, stride: Int, workspace ws: Workspace,
                gradients: (norm: Tensor, conv: Tensor, output: Tensor)? = nil) {
        conv1 = Conv2d(name + ".conv1", cin, cout, kernel: 3, stride: stride, padding: 1, workspace: ws)
        bn1 = BatchNorm2d(name + ".bn1", cout)
        bn1.fusedReLU = true
        conv2 = Conv2d(name + ".conv2", cout, cout, kernel: 3, stride: 1, padding: 1, workspace: ws)
        bn2 = BatchNorm2d(name + ".bn2", cout)
        bn2.fusedReLU = true   // with the shortcut added: the block's output
        downsample = (stride != 1 || cin != cout)
            ? (Conv2d(name + ".downsample.0", cin, cout, kernel: 1, stride: stride, workspace: ws),
               BatchNorm2d(name + ".downsample.1", cout))
            : nil
        if let g = gradients {
            bn2.gradientBuffer = g.norm; conv2.gradientBuffer = g.conv
            bn1.gradientBuffer = g.norm; conv1.gradientBuffer = g.output
            downsample?.bn.gradientBuffer = g.norm; downsample?.conv.gradientBuffer = g.conv
        }
    }

    private var layers: [Layer] {
        [conv1, bn1, conv2, bn2] + (downsample.map { [$0.conv, $0.bn] } ?? [])
    }
    public var parameters: [Parameter] { layers.flatMap(\.parameters) }
    public var state: [StateTensor] { layers.flatMap(\.state) }
    public var norms: [BatchNorm2d] { [bn1, bn2] + (downsample.map { [$0.bn] } ?? []) }

    /// x: `(N, Cin, H, W)` → `(N, Cout, H/stride, W/stride)`.
    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let p = profiler
        input = x
        let c1 = conv1.fwd(x, mode, p), r1 = bn1.fwd(c1, mode, p)     // BN + ReLU
        let c2 = conv2.fwd(r1, mode, p)
        var s = x
        if let (dc, db) = downsample { s = db.fwd(dc.fwd(x, mode, p), mode, p) }
        return bn2.fwd(c2, residual: s, mode, p)                        // BN + shortcut + ReLU
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let p = profiler, x = input!, out = bn2.output
        var g = bn2.bwd(dy, out, p)                                     // through the ReLU and BN
        g = conv2.bwd(g, out, p)
        g = bn1.bwd(g, out, p)
        g = conv1.bwd(g, x, p)
        if let (dc, db) = downsample {
            dsum.resize(dy.shape)
            Vec.reluBackward(dy.data, out.data, dsum.data, dy.count)    // the shortcut's share
            Vec.addInPlace(g.data, dc.bwd(db.bwd(dsum, out, p), x, p).data, g.count)
        } else {
            Vec.addReLUBackward(g.data, dy.data, out.data, g.count)
        }
        return g
    }
}

/// The CIFAR ResNet of He et al. 2016 §4.2: a 3×3 stem, three stages of `n`
/// BasicBlocks with 16/32/64 channels (stride 2 at the first block of stages 2
/// and 3), global average pooling and a linear classifier; depth 6n+2.
///
/// Names match PyTorch's `state_dict` of the same model written torchvision style.
public final class ResNet: @unchecked Sendable {
    public let depth: Int
    public let inChannels: Int
    public let numClasses: Int
    public let conv1: Conv2d
    public let bn1: BatchNorm2d
    /// `layer1`, `layer2`, `layer3`.
    public let stages: [[BasicBlock]]
    private let pool = GlobalAvgPool()
    public let fc: Linear
    public let workspace = Workspace()
    /// When set, forward and backward time every layer into it (for benchmarks).
    public var profiler: StepProfiler? {
        didSet { blocks.forEach { $0.profiler = profiler } }
    }
    private var input: Tensor?
    /// Called during `backward` with parameters whose gradients are final (for overlapped reduction).
    public var onGradientsReady: (([Parameter]) -> Void)?
    /// Values and gradients of every parameter, contiguous.
    public private(set) var store: ParameterStore!

    /// Builds `resnet{depth}` for depth 20, 32, 44, 56, 110, ... (6n+2).
    public init(depth: Int, inChannels: Int, numClasses: Int, seed: UInt64 = 0) {
        precondition(depth >= 8 && (depth - 2) % 6 == 0, "ResNet depth must be 6n+2, got \(depth)")
        self.depth = depth; self.inChannels = inChannels; self.numClasses = numClasses
        let n = (depth - 2) / 6
        conv1 = Conv2d("conv1", inChannels, 16, kernel: 3, stride: 1, padding: 1, workspace: workspace)
        conv1.needsInputGrad = false
        bn1 = BatchNorm2d("bn1", 16)
        bn1.fusedReLU = true
        var stages: [[BasicBlock]] = []
        var cin = 16
        // Backward's input gradients in four tensors sized for the largest (resized, never
        // shrunk): the blocks' own alternate between two, as each block's gradient is the next
        // one's `dy`, read to its end.
        let norm = Tensor(shape: [0]), conv = Tensor(shape: [0]), outputs = [Tensor(shape: [0]), Tensor(shape: [0])]
        bn1.gradientBuffer = norm
        var blockIndex = 0
        for (k, width) in [16, 32, 64].enumerated() {
            var blocks: [BasicBlock] = []
            for i in 0..<n {
                blocks.append(BasicBlock("layer\(k + 1).\(i)", cin, width, stride: (k > 0 && i == 0) ? 2 : 1,
                                         workspace: workspace, gradients: (norm, conv, outputs[blockIndex % 2])))
                blockIndex += 1
                cin = width
            }
            stages.append(blocks)
        }
        self.stages = stages
        fc = Linear("fc", 64, numClasses)
        store = ParameterStore(parameters)
        initialize(seed: seed)
    }

    /// Builds a model by name: `resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110`.
    public convenience init(name: String, inChannels: Int, numClasses: Int, seed: UInt64 = 0) throws {
        self.init(depth: try ResNet.depth(named: name), inChannels: inChannels, numClasses: numClasses, seed: seed)
    }

    /// The depth of a model name `resnet<6n+2>`.
    public static func depth(named name: String) throws -> Int {
        guard name.hasPrefix("resnet"), let d = Int(name.dropFirst(6)), d >= 8, (d - 2) % 6 == 0 else {
            throw TricksError.invalidArgument("unknown model '\(name)' (expected resnet20, resnet32, resnet44, resnet56 or resnet110)")
        }
        return d
    }

    private var blocks: [BasicBlock] { stages.flatMap { $0 } }

    /// Every parameter, in `state_dict` order.
    public var parameters: [Parameter] {
        conv1.parameters + bn1.parameters + blocks.flatMap(\.parameters) + fc.parameters
    }

    /// Every parameter and buffer, in `state_dict` order.
    public var state: [StateTensor] { conv1.state + bn1.state + blocks.flatMap(\.state) + fc.state }

    /// Every batch-norm layer.
    public var norms: [BatchNorm2d] { [bn1] + blocks.flatMap(\.norms) }

    /// torchvision's initialization: Kaiming normal (fan_out, ReLU) for convolutions,
    /// γ=1, β=0 for BN, and `nn.Linear`'s default U(±1/√fan_in) for the classifier.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(key: [seed, 0x1417])
        let convs = [conv1] + blocks.flatMap { b in [b.conv1, b.conv2] + (b.downsample.map { [$0.conv] } ?? []) }
        for c in convs {
            let std = (2.0 / Double(c.outChannels * c.kernel * c.kernel)).squareRoot()
            for i in 0..<c.weight.count { c.weight.value[i] = Float(rng.normal() * std) }
        }
        for bn in norms {
            bn.weight.values.update(repeating: 1); bn.bias.values.update(repeating: 0)
            bn.runningMean.update(repeating: 0, count: bn.channels)
            bn.runningVar.update(repeating: 1, count: bn.channels)
            bn.numBatchesTracked.pointee = 0
        }
        let bound = 1 / Double(fc.inFeatures).squareRoot()
        for i in 0..<fc.weight.count { fc.weight.value[i] = Float((2 * rng.uniform() - 1) * bound) }
        if let b = fc.bias { for i in 0..<b.count { b.value[i] = Float((2 * rng.uniform() - 1) * bound) } }
    }

    /// Synchronizes every BN layer's statistics over `group` (SyncBatchNorm), or makes them local with nil.
    public func setNormGroup(_ group: Communicator?) { norms.forEach { $0.group = group } }

    /// x: `(N, Cin, H, W)` → logits `(N, classes)`.
    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let p = profiler
        input = x
        var a = bn1.fwd(conv1.fwd(x, mode, p), mode, p)                // BN + ReLU
        for b in blocks { a = b.forward(a, mode: mode) }
        return fc.fwd(pool.fwd(a, mode, p), mode, p)
    }

    /// dlogits: `(N, classes)`; adds into every parameter gradient.
    public func backward(_ dlogits: Tensor) {
        let p = profiler, x = input!
        var g = pool.bwd(fc.bwd(dlogits, dlogits, p), dlogits, p)
        onGradientsReady?(fc.parameters)
        for b in blocks.reversed() {
            g = b.backward(g)
            onGradientsReady?(b.parameters)
        }
        _ = conv1.bwd(bn1.bwd(g, x, p), x, p)
        onGradientsReady?(conv1.parameters + bn1.parameters)
    }
}
