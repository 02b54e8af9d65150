// CPU kernels of densenets::roi_align and its backward (RoIAlign, He et al. 2017), with
// torchvision's semantics (`aligned` half-pixel shift, adaptive sampling when
// sampling_ratio <= 0, samples outside [-1, size] contribute zero).
//
// Layout of the work: a table of bilinear samples per RoI (four plane offsets and four
// weights per sample point) is built once, in parallel over RoIs. Forward and backward
// then run in parallel over blocks of channels, RoIs inside, the block's channels
// innermost: the block's planes stay in L2 across RoIs and a RoI's table stays in L1
// across the block; each thread writes only its own channels, so the backward scatter
// needs no atomics.
// torchvision's CPU kernels run on one thread and, in the backward, recompute the
// interpolation for every channel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace densenets {
namespace {

template <typename T>
struct Sample {
  int32_t pos[4];  // offsets in a channel plane (checked to fit)
  T w[4];
};

struct RoiGeometry {
  int64_t image;   // batch index
  int64_t begin;   // first entry in the sample table
  int64_t grid_h;  // samples per bin, each side
  int64_t grid_w;
};

// Bilinear sample at (y, x) of a height x width plane, as torchvision computes it.
template <typename T>
inline Sample<T> bilinear(T y, T x, int64_t height, int64_t width) {
  Sample<T> s{};
  if (y < T(-1) || y > T(height) || x < T(-1) || x > T(width)) return s;  // weights 0
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int64_t y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(x), y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - y_low, lx = x - x_low, hy = T(1) - ly, hx = T(1) - lx;
  s.pos[0] = static_cast<int32_t>(y_low * width + x_low);
  s.pos[1] = static_cast<int32_t>(y_low * width + x_high);
  s.pos[2] = static_cast<int32_t>(y_high * width + x_low);
  s.pos[3] = static_cast<int32_t>(y_high * width + x_high);
  s.w[0] = hy * hx;
  s.w[1] = hy * lx;
  s.w[2] = ly * hx;
  s.w[3] = ly * lx;
  return s;
}

// A RoI's top-left corner and size in feature-map pixels, as torchvision computes them.
template <typename T>
struct RoiBox {
  T start_h, start_w, height, width;
};

template <typename T>
inline RoiBox<T> roi_box(const T* b, T scale, bool aligned) {
  const T shift = aligned ? T(0.5) : T(0);
  const T start_w = b[1] * scale - shift, start_h = b[2] * scale - shift;
  T roi_w = b[3] * scale - shift - start_w, roi_h = b[4] * scale - shift - start_h;
  if (!aligned) {
    roi_w = std::max(roi_w, T(1));
    roi_h = std::max(roi_h, T(1));
  }
  return {start_h, start_w, roi_h, roi_w};
}

// Per-RoI geometry and the table of all its samples, bins in row-major order and the
// grid_h x grid_w samples of a bin consecutive.
template <typename T>
void build_table(const at::Tensor& rois, double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                 int64_t sampling_ratio, bool aligned, int64_t batch, int64_t height, int64_t width,
                 std::vector<RoiGeometry>& geo, std::vector<Sample<T>>& table) {
  const int64_t num_rois = rois.size(0);
  TORCH_CHECK(height * width <= INT32_MAX, "roi_align: feature maps of over 2^31 pixels are not supported");
  const T* r = rois.data_ptr<T>();
  const T scale = static_cast<T>(spatial_scale);
  geo.resize(num_rois);
  int64_t total = 0;
  for (int64_t i = 0; i < num_rois; ++i) {
    const T* b = r + i * 5;
    const RoiBox<T> box = roi_box(b, scale, aligned);
    const int64_t image = static_cast<int64_t>(b[0]);
    TORCH_CHECK(image >= 0 && image < batch, "roi_align: RoI ", i, " has batch index ", image,
                " but the input holds ", batch, " images");
    const int64_t gh = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(box.height / pooled_h));
    const int64_t gw = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(box.width / pooled_w));
    geo[i] = {image, total, gh, gw};
    total += pooled_h * pooled_w * gh * gw;
  }
  table.resize(total);
  at::parallel_for(0, num_rois, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const RoiBox<T> box = roi_box(r + i * 5, scale, aligned);
      const T start_h = box.start_h, start_w = box.start_w;
      const T bin_h = box.height / static_cast<T>(pooled_h), bin_w = box.width / static_cast<T>(pooled_w);
      const RoiGeometry& g = geo[i];
      Sample<T>* s = table.data() + g.begin;
      for (int64_t ph = 0; ph < pooled_h; ++ph)
        for (int64_t pw = 0; pw < pooled_w; ++pw)
          for (int64_t iy = 0; iy < g.grid_h; ++iy) {
            const T y = start_h + ph * bin_h + static_cast<T>(iy + .5f) * bin_h / static_cast<T>(g.grid_h);
            for (int64_t ix = 0; ix < g.grid_w; ++ix) {
              const T x = start_w + pw * bin_w + static_cast<T>(ix + .5f) * bin_w / static_cast<T>(g.grid_w);
              *s++ = bilinear<T>(y, x, height, width);
            }
          }
    }
  });
}

// Runs f(c0, c1) in parallel over blocks of channels [c0, c1) whose planes fit in
// 256 KiB of L2 (measured best on a 2 MiB-L2 Xeon), every thread getting at least one
// block: the NCHW forward and backward both iterate this way.
template <typename F>
void parallel_over_channel_blocks(int64_t channels, int64_t plane_bytes, const F& f) {
  const int64_t fit = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(plane_bytes, 1));
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t block = std::max<int64_t>(1, std::min(fit, (channels + threads - 1) / threads));
  at::parallel_for(0, (channels + block - 1) / block, 1, [&](int64_t b0, int64_t b1) {
    f(b0 * block, std::min(channels, b1 * block));
  });
}

void check_args(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_h, int64_t pooled_w) {
  TORCH_CHECK(input.dim() == 4, "roi_align: input must be 4-D (N, C, H, W), got ", input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align: rois must be (K, 5), got ", rois.sizes());
  TORCH_CHECK(rois.scalar_type() == input.scalar_type(), "roi_align: rois and input dtypes differ");
  TORCH_CHECK(pooled_h > 0 && pooled_w > 0, "roi_align: output size must be positive");
}

// Channels-last input (N, H, W, C in memory): the four corners of a sample are C-long
// contiguous rows, so the inner loops run over channels (vectorised). Forward: parallel
// over RoIs, each accumulating its bins x C block. Backward: parallel over channel
// ranges, every thread scatters its part of each row; grad_input is channels-last too.
template <typename T>
void roi_align_forward_nhwc(const T* in, T* out, const std::vector<RoiGeometry>& geo,
                            const std::vector<Sample<T>>& table, int64_t channels, int64_t height, int64_t width,
                            int64_t bins) {
  const int64_t num_rois = static_cast<int64_t>(geo.size());
  at::parallel_for(0, num_rois, 1, [&](int64_t r0, int64_t r1) {
    std::vector<T> acc(bins * channels);
    for (int64_t i = r0; i < r1; ++i) {
      const RoiGeometry& g = geo[i];
      const int64_t per_bin = g.grid_h * g.grid_w;
      const T count = static_cast<T>(std::max<int64_t>(per_bin, 1));
      const T* image = in + g.image * height * width * channels;
      const Sample<T>* s = table.data() + g.begin;
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t b = 0; b < bins; ++b) {
        T* a = acc.data() + b * channels;
        for (int64_t k = 0; k < per_bin; ++k, ++s) {
          const T *p0 = image + int64_t(s->pos[0]) * channels, *p1 = image + int64_t(s->pos[1]) * channels,
                  *p2 = image + int64_t(s->pos[2]) * channels, *p3 = image + int64_t(s->pos[3]) * channels;
          const T w0 = s->w[0], w1 = s->w[1], w2 = s->w[2], w3 = s->w[3];
          for (int64_t c = 0; c < channels; ++c) a[c] += w0 * p0[c] + w1 * p1[c] + w2 * p2[c] + w3 * p3[c];
        }
      }
      T* o = out + i * channels * bins;
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t b = 0; b < bins; ++b) o[c * bins + b] = acc[b * channels + c] / count;
    }
  });
}

template <typename T>
void roi_align_backward_nhwc(const T* grad, T* gi, const std::vector<RoiGeometry>& geo,
                             const std::vector<Sample<T>>& table, int64_t channels, int64_t height, int64_t width,
                             int64_t bins) {
  const int64_t num_rois = static_cast<int64_t>(geo.size());
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  // Ranges of whole 16-channel groups so that threads do not share cache lines.
  const int64_t step = std::max<int64_t>(16, ((channels + threads - 1) / threads + 15) / 16 * 16);
  at::parallel_for(0, (channels + step - 1) / step, 1, [&](int64_t t0, int64_t t1) {
    const int64_t c0 = t0 * step, c1 = std::min(channels, t1 * step), width_c = c1 - c0;
    std::vector<T> g_rows(bins * width_c);  // this RoI's grad, bins x own channels
    for (int64_t i = 0; i < num_rois; ++i) {
      const RoiGeometry& g = geo[i];
      const int64_t per_bin = g.grid_h * g.grid_w;
      const T inv_count = T(1) / static_cast<T>(std::max<int64_t>(per_bin, 1));
      const T* go = grad + i * channels * bins;
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t b = 0; b < bins; ++b) g_rows[b * width_c + (c - c0)] = go[c * bins + b] * inv_count;
      T* image = gi + g.image * height * width * channels + c0;
      const Sample<T>* s = table.data() + g.begin;
      for (int64_t b = 0; b < bins; ++b) {
        const T* v = g_rows.data() + b * width_c;
        for (int64_t k = 0; k < per_bin; ++k, ++s) {
          for (int j = 0; j < 4; ++j) {
            const T w = s->w[j];
            if (w == T(0)) continue;
            T* p = image + int64_t(s->pos[j]) * channels;
            for (int64_t c = 0; c < width_c; ++c) p[c] += w * v[c];
          }
        }
      }
    }
  });
}

at::Tensor roi_align_cpu(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale, int64_t pooled_h,
                         int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  check_args(input_, rois_, pooled_h, pooled_w);
  const bool nhwc = input_.size(1) > 1 && input_.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor input = nhwc ? input_ : input_.contiguous(), rois = rois_.contiguous();
  const int64_t batch = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t num_rois = rois.size(0), bins = pooled_h * pooled_w;
  at::Tensor output = at::empty({num_rois, channels, pooled_h, pooled_w}, input.options());
  if (num_rois == 0 || channels == 0 || height == 0 || width == 0) return output;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_cpu", [&] {
    std::vector<RoiGeometry> geo;
    std::vector<Sample<scalar_t>> table;
    build_table<scalar_t>(rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned, batch, height, width,
                          geo, table);
    const scalar_t* in = input.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const int64_t plane = height * width;
    if (nhwc) {
      roi_align_forward_nhwc<scalar_t>(in, out, geo, table, channels, height, width, bins);
      return;
    }
    parallel_over_channel_blocks(channels, plane * int64_t(sizeof(scalar_t)), [&](int64_t c0, int64_t c1) {
      for (int64_t i = 0; i < num_rois; ++i) {
        const RoiGeometry& g = geo[i];
        const int64_t per_bin = g.grid_h * g.grid_w;
        const scalar_t count = static_cast<scalar_t>(std::max<int64_t>(per_bin, 1));
        for (int64_t c = c0; c < c1; ++c) {
          const scalar_t* p = in + (g.image * channels + c) * plane;
          const Sample<scalar_t>* s = table.data() + g.begin;
          scalar_t* o = out + (i * channels + c) * bins;
          for (int64_t b = 0; b < bins; ++b) {
            scalar_t acc = 0;
            for (int64_t k = 0; k < per_bin; ++k, ++s)
              acc += s->w[0] * p[s->pos[0]] + s->w[1] * p[s->pos[1]] + s->w[2] * p[s->pos[2]] + s->w[3] * p[s->pos[3]];
            o[b] = acc / count;
          }
        }
      }
    });
  });
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad_, const at::Tensor& rois_, double spatial_scale,
                                  int64_t pooled_h, int64_t pooled_w, int64_t batch, int64_t channels, int64_t height,
                                  int64_t width, int64_t sampling_ratio, bool aligned, bool channels_last) {
  const at::Tensor grad = grad_.contiguous(), rois = rois_.contiguous();
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align_backward: rois must be (K, 5), got ", rois.sizes());
  const int64_t num_rois = rois.size(0), bins = pooled_h * pooled_w;
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels && grad.size(2) == pooled_h &&
                  grad.size(3) == pooled_w,
              "roi_align_backward: grad_output has shape ", grad.sizes());
  const bool nhwc = channels_last && channels > 1;
  at::Tensor grad_input =
      at::empty({batch, channels, height, width}, grad.options(),
                nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous)
          .zero_();
  if (num_rois == 0 || channels == 0 || height == 0 || width == 0) return grad_input;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    std::vector<RoiGeometry> geo;
    std::vector<Sample<scalar_t>> table;
    build_table<scalar_t>(rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned, batch, height, width,
                          geo, table);
    const scalar_t* go = grad.data_ptr<scalar_t>();
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    if (nhwc) {
      roi_align_backward_nhwc<scalar_t>(go, gi, geo, table, channels, height, width, bins);
      return;
    }
    const int64_t plane = height * width;
    parallel_over_channel_blocks(channels, plane * int64_t(sizeof(scalar_t)), [&](int64_t c0, int64_t c1) {
      for (int64_t i = 0; i < num_rois; ++i) {
        const RoiGeometry& g = geo[i];
        const int64_t per_bin = g.grid_h * g.grid_w;
        const scalar_t inv_count = scalar_t(1) / static_cast<scalar_t>(std::max<int64_t>(per_bin, 1));
        for (int64_t c = c0; c < c1; ++c) {
          scalar_t* p = gi + (g.image * channels + c) * plane;
          const Sample<scalar_t>* s = table.data() + g.begin;
          const scalar_t* o = go + (i * channels + c) * bins;
          for (int64_t b = 0; b < bins; ++b) {
            const scalar_t v = o[b] * inv_count;
            if (v == scalar_t(0)) {
              s += per_bin;
              continue;
            }
            for (int64_t k = 0; k < per_bin; ++k, ++s) {
              p[s->pos[0]] += v * s->w[0];
              p[s->pos[1]] += v * s->w[1];
              p[s->pos[2]] += v * s->w[2];
              p[s->pos[3]] += v * s->w[3];
            }
          }
        }
      }
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(densenets, CPU, m) {
  m.impl("roi_align", &roi_align_cpu);
  m.impl("roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace densenets
