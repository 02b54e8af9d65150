// CUDA kernels of densenets::ms_deform_attn and its backward.
//
// Forward: one thread per output element (n, q, m, c). Consecutive threads are
// consecutive channels of one head, so the four corner reads of a warp are coalesced.
// Backward: one warp per row r = (n, q, m), lanes striding over the C channels. Each lane
// adds its channels' share to grad_value (atomics: rows of different queries share
// pixels) and its partial dot products for the location and weight gradients, which the
// warp sums with shuffles; lane 0 writes them (no atomics: the row owns them).
// float16/bfloat16 are computed in float32 (at::opmath_type) and grad_value is
// accumulated in a float32 buffer. Every launch goes to the current stream; indices are
// 64-bit.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "ms_deform_attn.h"

namespace densenets {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

unsigned blocks_for(int64_t work, int64_t per_block) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(kMaxBlocks, (work + per_block - 1) / per_block)));
}

template <typename T>
__global__ void msda_forward_kernel(MsdaGeometry g, const T* __restrict__ value, const int64_t* __restrict__ shapes,
                                    const int64_t* __restrict__ starts, const T* __restrict__ loc,
                                    const T* __restrict__ attn, T* __restrict__ out) {
  using A = at::opmath_type<T>;
  const int64_t total = g.rows() * g.channels, stride = g.pixel_stride(), samples = g.samples();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = i % g.channels, r = i / g.channels;
    const int64_t m = r % g.heads, n = r / (g.queries * g.heads);
    const T* image = value + n * g.pixels * stride + m * g.channels + c;
    const T* lp = loc + r * samples * 2;
    const T* ap = attn + r * samples;
    A acc = A(0);
    for (int64_t l = 0; l < g.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      const T* base = image + starts[l] * stride;
      for (int64_t p = 0; p < g.points; ++p, lp += 2, ++ap) {
        const BilinearSample<A> s = msda_sample<A>(static_cast<A>(lp[0]), static_cast<A>(lp[1]), height, width);
        if (sample_empty(s)) continue;
        const T* v = base + s.offset * stride;
        const int64_t dx = s.dx * stride, dy = s.dy * stride;
        const A sample = s.w[0] * static_cast<A>(v[0]) + s.w[1] * static_cast<A>(v[dx]) +
                         s.w[2] * static_cast<A>(v[dy]) + s.w[3] * static_cast<A>(v[dy + dx]);
        acc += static_cast<A>(*ap) * sample;
      }
    }
    out[i] = static_cast<T>(acc);
  }
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__global__ void msda_backward_kernel(MsdaGeometry g, const T* __restrict__ grad_out, const T* __restrict__ value,
                                     const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                                     const T* __restrict__ loc, const T* __restrict__ attn,
                                     at::opmath_type<T>* __restrict__ grad_value, T* __restrict__ grad_loc,
                                     T* __restrict__ grad_attn) {
  using A = at::opmath_type<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(blockDim.x / kWarp) * gridDim.x;
  const int64_t stride = g.pixel_stride(), samples = g.samples();
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; r < g.rows();
       r += warps) {
    const int64_t m = r % g.heads, n = r / (g.queries * g.heads);
    const int64_t image = n * g.pixels * stride + m * g.channels;
    const T* go = grad_out + r * g.channels;
    const T* lp = loc + r * samples * 2;
    const T* ap = attn + r * samples;
    T* gl = grad_loc + r * samples * 2;
    T* ga = grad_attn + r * samples;
    for (int64_t l = 0; l < g.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1], start = image + starts[l] * stride;
      for (int64_t p = 0; p < g.points; ++p, lp += 2, ++ap, gl += 2, ++ga) {
        const A x = static_cast<A>(lp[0]), y = static_cast<A>(lp[1]);
        // The same for the whole warp, so the shuffles below see every lane.
        if (!sample_inside(y * A(height) - A(0.5), x * A(width) - A(0.5), height, width)) {
          if (lane == 0) gl[0] = gl[1] = *ga = T(0);
          continue;
        }
        const BilinearSample<A> s = msda_sample<A>(x, y, height, width);
        const BilinearGrad<A> ds = msda_sample_grad<A>(x, y, height, width);
        const A w = static_cast<A>(*ap);
        const int64_t at0 = start + s.offset * stride;
        const int64_t corner[4] = {0, s.dx * stride, s.dy * stride, (s.dx + s.dy) * stride};
        A dot[4] = {A(0), A(0), A(0), A(0)};
        for (int64_t c = lane; c < g.channels; c += kWarp) {
          const A gc = static_cast<A>(go[c]);
          for (int k = 0; k < 4; ++k) {
            dot[k] += gc * static_cast<A>(value[at0 + corner[k] + c]);
            if (s.w[k] != A(0)) gpuAtomicAdd(grad_value + at0 + corner[k] + c, w * s.w[k] * gc);
          }
        }
        A sa = A(0), sx = A(0), sy = A(0);
        for (int k = 0; k < 4; ++k) {
          sa += s.w[k] * dot[k];
          sx += ds.gx[k] * dot[k];
          sy += ds.gy[k] * dot[k];
        }
        sa = warp_sum(sa);
        sx = warp_sum(sx);
        sy = warp_sum(sy);
        if (lane == 0) {
          *ga = static_cast<T>(sa);
          gl[0] = static_cast<T>(w * sx);
          gl[1] = static_cast<T>(w * sy);
        }
      }
    }
  }
}

at::Tensor ms_deform_attn_cuda(const at::Tensor& value_, const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights) {
  const MsdaGeometry g =
      make_msda_geometry(value_, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const c10::cuda::CUDAGuard guard(value_.device());
  const at::Tensor value = value_.contiguous(), loc = sampling_locations.contiguous(),
                   attn = attention_weights.contiguous(), shapes = spatial_shapes.contiguous(),
                   starts = level_start_index.contiguous();
  at::Tensor out = at::empty({g.batch, g.queries, g.heads * g.channels}, value.options());
  if (out.numel() == 0) return out;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda", [&] {
    msda_forward_kernel<scalar_t><<<blocks_for(out.numel(), kThreads), kThreads, 0, stream>>>(
        g, value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
        loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output_, const at::Tensor& value_, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const MsdaGeometry g =
      make_msda_geometry(value_, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(grad_output_.dim() == 3 && grad_output_.size(0) == g.batch && grad_output_.size(1) == g.queries &&
                  grad_output_.size(2) == g.heads * g.channels,
              "ms_deform_attn_backward: grad_output shape ", grad_output_.sizes(), " should be (", g.batch, ", ",
              g.queries, ", ", g.heads * g.channels, ")");
  const c10::cuda::CUDAGuard guard(value_.device());
  const at::Tensor value = value_.contiguous(), loc = sampling_locations.contiguous(),
                   attn = attention_weights.contiguous(), shapes = spatial_shapes.contiguous(),
                   starts = level_start_index.contiguous();
  const at::Tensor grad_output = grad_output_.contiguous().to(value.scalar_type());
  const bool reduced = value.scalar_type() == at::kHalf || value.scalar_type() == at::kBFloat16;
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(reduced ? at::kFloat : value.scalar_type()));
  at::Tensor grad_loc = at::zeros(loc.sizes(), loc.options()), grad_attn = at::zeros(attn.sizes(), attn.options());
  if (g.rows() > 0) {
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using A = at::opmath_type<scalar_t>;
      msda_backward_kernel<scalar_t><<<blocks_for(g.rows(), kThreads / kWarp), kThreads, 0, stream>>>(
          g, grad_output.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(),
          starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(), grad_value.data_ptr<A>(),
          grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {reduced ? grad_value.to(value.scalar_type()) : grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(densenets, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace densenets
