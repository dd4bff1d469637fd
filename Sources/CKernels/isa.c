/*
 * The one instruction-set decision of the kernels. At load time the best set the CPU runs is
 * chosen, lowered by the environment variable TRICKS_ISA (avx512, avx2, portable) when it is
 * set; a request the CPU cannot honour, or an unknown name, is recorded (tk_isa_env_error) and
 * the best set stays in effect, so the caller can refuse to start with a clear message.
 * Every kernel reads tk_isa() and nothing else.
 */
#include "ckernels.h"

#include <stdlib.h>
#include <string.h>

static int current = TK_ISA_PORTABLE;
static int env_error = 0; /* 0, or 1 (unknown name), 2 (not supported by this CPU) */

int tk_isa_supported(int isa) {
    switch (isa) {
    case TK_ISA_PORTABLE: return 1;
#if defined(__x86_64__)
    case TK_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case TK_ISA_AVX512: return __builtin_cpu_supports("avx512f") && tk_isa_supported(TK_ISA_AVX2);
#endif
    default: return 0;
    }
}

int tk_isa_best(void) {
    for (int isa = TK_ISA_AVX512; isa > TK_ISA_PORTABLE; isa--)
        if (tk_isa_supported(isa)) return isa;
    return TK_ISA_PORTABLE;
}

const char *tk_isa_name(int isa) {
    switch (isa) {
    case TK_ISA_AVX2: return "avx2";
    case TK_ISA_AVX512: return "avx512";
    default: return "portable";
    }
}

int tk_isa_parse(const char *name) {
    if (!name) return -1;
    for (int isa = TK_ISA_PORTABLE; isa <= TK_ISA_AVX512; isa++)
        if (strcmp(name, tk_isa_name(isa)) == 0) return isa;
    return -1;
}

int tk_isa(void) { return current; }

int tk_set_isa(int isa) {
    if (isa < TK_ISA_PORTABLE || isa > TK_ISA_AVX512 || !tk_isa_supported(isa)) return -1;
    current = isa;
    return 0;
}

int tk_isa_env_error(void) { return env_error; }

__attribute__((constructor)) static void tk_isa_init(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
#endif
    current = tk_isa_best();
    const char *env = getenv("TRICKS_ISA");
    if (!env || !*env) return;
    int isa = tk_isa_parse(env);
    if (isa < 0) env_error = 1;
    else if (!tk_isa_supported(isa)) env_error = 2;
    else current = isa;
}
