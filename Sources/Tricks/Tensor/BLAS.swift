import CBLAS

/// Thin wrappers over OpenBLAS, row-major.
public enum BLAS {
    /// C(M×N) = alpha·op(A)·op(B) + beta·C, row-major with leading dimensions.
    @inline(__always)
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int, beta: Float,
                            c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }

    /// y += alpha·x over n contiguous floats.
    @inline(__always)
    public static func axpy(n: Int, alpha: Float, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        cblas_saxpy(blasint(n), alpha, x, 1, y, 1)
    }

    /// Sets the number of threads OpenBLAS uses.
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }

    /// The name of the kernel set OpenBLAS picked for this CPU (e.g. `SkylakeX`, `Haswell`, `Prescott`).
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// A better `OPENBLAS_CORETYPE` when OpenBLAS did not recognize this CPU and fell back to its
    /// generic SSE3 kernels (`Prescott`), as older OpenBLAS releases do on newer Xeons; nil otherwise.
    public static func betterCoreType(cpuFlags: Set<String>) -> String? {
        guard coreName.lowercased() == "prescott" else { return nil }
        if cpuFlags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]) { return "SkylakeX" }
        if cpuFlags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        return nil
    }

    /// The number of threads OpenBLAS uses.
    public static var threads: Int { Int(openblas_get_num_threads()) }
}
