// Run-time choice between loops compiled for the baseline x86-64 ISA (what the extension
// is built for) and the same loops compiled for AVX + FMA, on CPUs that have them. A
// hot function is written once as an always-inline template and instantiated twice:
//   DN_TARGET_AVX void f_avx(args) { f<float>(args); }   // compiled with AVX + FMA
//   if (have_avx_fma()) f_avx(args); else f<float>(args);
#pragma once

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DN_X86_DISPATCH 1
#define DN_ALWAYS_INLINE inline __attribute__((always_inline))
#define DN_TARGET_AVX __attribute__((target("avx,fma")))
#define DN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define DN_X86_DISPATCH 0
#define DN_ALWAYS_INLINE inline
#define DN_TARGET_AVX
#define DN_TARGET_AVX2
#endif

namespace densenets {

// Whether the CPU has AVX and FMA (false where the dispatch is not compiled).
inline bool have_avx_fma() {
#if DN_X86_DISPATCH
  static const bool ok = __builtin_cpu_supports("avx") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

// Whether the CPU has AVX2 and FMA (256-bit integer lanes too).
inline bool have_avx2_fma() {
#if DN_X86_DISPATCH
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

}  // namespace densenets
