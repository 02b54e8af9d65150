// CPU kernels of densenets::dropout: a counter-based random keep mask applied in one pass.
//
// `torch.nn.functional.dropout` on a CPU draws a Bernoulli tensor from the sequential
// Mersenne twister, converts it, divides it by 1 - p and multiplies: four passes over the
// activation and a float mask kept for the backward. Here the keep decision of element i
// is hash(seed, i) >= p * 2^32 with a stateless 32-bit hash, so any thread computes any
// element's decision independently (vectorisable, independent of the thread count), the
// output and a one-byte mask are written in the same pass, and the backward is one pass.
//
// The hash: two rounds of the "lowbias32" integer mixer (C. Wellons, "Prospecting for
// hash functions", 2018; bias 0.17 per round), keyed by the two halves of the 64-bit seed
// and the high half of the 64-bit index. Its output bits pass the independence checks of
// tests/ops/test_dropout.py (keep rate, pairs of neighbours, streams of two seeds).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu/vec_dispatch.h"

namespace densenets {
namespace {

DN_ALWAYS_INLINE uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// Elements per task: large enough to amortise the dispatch, small enough to balance.
constexpr int64_t kGrain = int64_t(1) << 16;

struct Keys {
  uint32_t k0, k1;
};

// The keys of elements [begin, begin + 2^32): the seed and the index's high half.
DN_ALWAYS_INLINE Keys keys_for(uint64_t seed, uint64_t index_high) {
  const uint32_t lo = static_cast<uint32_t>(seed), hi = static_cast<uint32_t>(seed >> 32);
  return {mix32(lo ^ mix32(static_cast<uint32_t>(index_high) + 0x9e3779b9U)), hi};
}

// out[i] = keep ? x[i] * scale : 0 and mask[i] = keep for i in [0, n), element indices from i0.
// The caller keeps [i0, i0 + n) within one 2^32-aligned block.
template <typename T, typename Acc>
DN_ALWAYS_INLINE void dropout_span(const T* __restrict__ x, T* __restrict__ out, bool* __restrict__ mask,
                                   int64_t n, uint64_t i0, Keys keys, uint32_t threshold, Acc scale) {
  // Blocks of 16: the hashes first (a plain uint32 loop the compiler vectorises), then the
  // mask and the scaled values.
  constexpr int64_t kBlock = 16;
  const uint32_t base = static_cast<uint32_t>(i0);
  uint8_t* __restrict__ keep = reinterpret_cast<uint8_t*>(mask);
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    uint32_t r[kBlock];
    for (int64_t j = 0; j < kBlock; ++j)
      r[j] = mix32(mix32((base + static_cast<uint32_t>(b + j)) ^ keys.k0) ^ keys.k1);
    if (len == kBlock) {
      for (int64_t j = 0; j < kBlock; ++j) {
        keep[b + j] = r[j] >= threshold;
        out[b + j] = static_cast<T>(static_cast<Acc>(x[b + j]) * (r[j] >= threshold ? scale : Acc(0)));
      }
    } else {
      for (int64_t j = 0; j < len; ++j) {
        keep[b + j] = r[j] >= threshold;
        out[b + j] = static_cast<T>(static_cast<Acc>(x[b + j]) * (r[j] >= threshold ? scale : Acc(0)));
      }
    }
  }
}

template <typename T, typename Acc>
DN_ALWAYS_INLINE void backward_span(const T* __restrict__ grad, const bool* __restrict__ mask, T* __restrict__ out,
                                    int64_t n, Acc scale) {
  const uint8_t* __restrict__ keep = reinterpret_cast<const uint8_t*>(mask);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(static_cast<Acc>(grad[i]) * (keep[i] ? scale : Acc(0)));
}

DN_TARGET_AVX2 void dropout_span_avx2(const float* x, float* out, bool* mask, int64_t n, uint64_t i0, Keys keys,
                                      uint32_t threshold, float scale) {
  dropout_span<float, float>(x, out, mask, n, i0, keys, threshold, scale);
}

DN_TARGET_AVX2 void backward_span_avx2(const float* grad, const bool* mask, float* out, int64_t n, float scale) {
  backward_span<float, float>(grad, mask, out, n, scale);
}

// The span loops, through the AVX2 instantiation for float on CPUs that have it.
template <typename T, typename Acc>
void run_dropout(const T* x, T* out, bool* mask, int64_t n, uint64_t i0, Keys keys, uint32_t threshold, Acc scale) {
  dropout_span<T, Acc>(x, out, mask, n, i0, keys, threshold, scale);
}

void run_dropout(const float* x, float* out, bool* mask, int64_t n, uint64_t i0, Keys keys, uint32_t threshold,
                 float scale) {
  if (have_avx2_fma()) return dropout_span_avx2(x, out, mask, n, i0, keys, threshold, scale);
  dropout_span<float, float>(x, out, mask, n, i0, keys, threshold, scale);
}

template <typename T, typename Acc>
void run_backward(const T* grad, const bool* mask, T* out, int64_t n, Acc scale) {
  backward_span<T, Acc>(grad, mask, out, n, scale);
}

void run_backward(const float* grad, const bool* mask, float* out, int64_t n, float scale) {
  if (have_avx2_fma()) return backward_span_avx2(grad, mask, out, n, scale);
  backward_span<float, float>(grad, mask, out, n, scale);
}

// p in [0, 1] -> drop when the 32-bit hash is below round(p * 2^32); p = 1 drops all.
uint32_t drop_threshold(double p) {
  const double t = std::round(p * 4294967296.0);
  return t >= 4294967295.0 ? 0xffffffffU : static_cast<uint32_t>(t);
}

std::tuple<at::Tensor, at::Tensor> dropout_cpu(const at::Tensor& input, double p, const at::Tensor& seed_tensor) {
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "dropout: p must be in [0, 1], got ", p);
  TORCH_CHECK(seed_tensor.numel() == 1 && seed_tensor.scalar_type() == at::kLong && seed_tensor.device().is_cpu(),
              "dropout: seed must be a one-element int64 CPU tensor, got ", seed_tensor.scalar_type(), " ",
              seed_tensor.sizes(), " on ", seed_tensor.device());
  const int64_t seed = seed_tensor.item<int64_t>();
  TORCH_CHECK(input.is_floating_point(), "dropout: input must be floating point, got ", input.scalar_type());
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor mask = at::empty(x.sizes(), x.options().dtype(at::kBool), at::MemoryFormat::Contiguous);
  const int64_t numel = x.numel();
  if (numel == 0) return {out, mask};
  if (p >= 1.0) {  // everything dropped (the 32-bit threshold cannot express "all")
    out.zero_();
    mask.fill_(false);
    return {out, mask};
  }
  const uint32_t threshold = drop_threshold(p);
  const uint64_t useed = static_cast<uint64_t>(seed);
  bool* m = mask.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dropout_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t scale = static_cast<acc_t>(1.0 / (1.0 - p));
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {  // split at 2^32 boundaries of the index
        const uint64_t high = static_cast<uint64_t>(i) >> 32;
        const int64_t stop = std::min<int64_t>(end, static_cast<int64_t>((high + 1) << 32));
        run_dropout(src + i, dst + i, m + i, stop - i, static_cast<uint64_t>(i), keys_for(useed, high), threshold,
                    scale);
        i = stop;
      }
    });
  });
  return {out, mask};
}

at::Tensor dropout_backward_cpu(const at::Tensor& grad_output, const at::Tensor& mask, double scale) {
  TORCH_CHECK(mask.scalar_type() == at::kBool, "dropout_backward: mask must be bool, got ", mask.scalar_type());
  TORCH_CHECK(grad_output.sizes() == mask.sizes(), "dropout_backward: grad_output ", grad_output.sizes(),
              " and mask ", mask.sizes(), " differ in shape");
  const at::Tensor g = grad_output.contiguous(), k = mask.contiguous();
  at::Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  const bool* m = k.const_data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "dropout_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t s = static_cast<acc_t>(scale);
    const scalar_t* src = g.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.numel(), kGrain, [&](int64_t begin, int64_t end) {
      run_backward(src + begin, m + begin, dst + begin, end - begin, s);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(densenets, CPU, m) {
  m.impl("dropout", &dropout_cpu);
  m.impl("dropout_backward", &dropout_backward_cpu);
}

}  // namespace densenets
