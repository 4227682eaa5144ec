// CPU kernels for the TopK SAE backward pass (fp32). Built on first use by saelab.kernels with
// torch.utils.cpp_extension; the pure-PyTorch CSR path is the fallback and the reference in tests.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstring>

// out[n, d] with out[l] = sum over (b, j) with idx[b, j] == l of coef[b, j] * rows[b].
// Entries are bucketed by latent (a stable counting sort), then each thread owns a range of
// latents: every output row is zeroed and accumulated by one thread, no atomics, no extra pass.
torch::Tensor scatter_outer(torch::Tensor idx, torch::Tensor coef, torch::Tensor rows, int64_t n) {
  TORCH_CHECK(idx.dim() == 2 && coef.sizes() == idx.sizes(), "idx and coef must be [B, K]");
  TORCH_CHECK(rows.dim() == 2 && rows.size(0) == idx.size(0), "rows must be [B, D]");
  TORCH_CHECK(rows.scalar_type() == torch::kFloat && coef.scalar_type() == torch::kFloat, "fp32 only");
  idx = idx.contiguous().to(torch::kLong);
  coef = coef.contiguous();
  rows = rows.contiguous();
  const int64_t B = idx.size(0), K = idx.size(1), D = rows.size(1), E = B * K;
  const int64_t* ip = idx.data_ptr<int64_t>();
  std::vector<int64_t> start(n + 1, 0);
  for (int64_t e = 0; e < E; ++e) {
    TORCH_CHECK(ip[e] >= 0 && ip[e] < n, "latent index out of range");
    start[ip[e] + 1]++;
  }
  for (int64_t l = 0; l < n; ++l) start[l + 1] += start[l];
  std::vector<int64_t> order(E);
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t e = 0; e < E; ++e) order[fill[ip[e]]++] = e;
  }
  auto out = torch::empty({n, D}, rows.options());
  float* op = out.data_ptr<float>();
  const float* cp = coef.data_ptr<float>();
  const float* rp = rows.data_ptr<float>();
  at::parallel_for(0, n, 64, [&](int64_t l0, int64_t l1) {
    for (int64_t l = l0; l < l1; ++l) {
      float* o = op + l * D;
      std::memset(o, 0, sizeof(float) * D);
      for (int64_t p = start[l]; p < start[l + 1]; ++p) {
        const int64_t e = order[p];
        const float c = cp[e];
        const float* r = rp + (e / K) * D;
        for (int64_t t = 0; t < D; ++t) o[t] += c * r[t];
      }
    }
  });
  return out;
}

// out[b, j] = <rows[b], W[idx[b, j]]>, parallel over b.
torch::Tensor sampled_dot(torch::Tensor rows, torch::Tensor W, torch::Tensor idx) {
  TORCH_CHECK(rows.scalar_type() == torch::kFloat && W.scalar_type() == torch::kFloat, "fp32 only");
  rows = rows.contiguous();
  W = W.contiguous();
  idx = idx.contiguous().to(torch::kLong);
  const int64_t B = idx.size(0), K = idx.size(1), D = rows.size(1), n = W.size(0);
  auto out = torch::empty({B, K}, rows.options());
  float* op = out.data_ptr<float>();
  const float* rp = rows.data_ptr<float>();
  const float* wp = W.data_ptr<float>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* r = rp + b * D;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t l = ip[b * K + j];
        TORCH_CHECK(l >= 0 && l < n, "latent index out of range");
        const float* w = wp + l * D;
        float acc = 0.f;
        for (int64_t t = 0; t < D; ++t) acc += r[t] * w[t];
        op[b * K + j] = acc;
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scatter_outer", &scatter_outer, "sum_{b,j} coef[b,j] rows[b] into row idx[b,j]");
  m.def("sampled_dot", &sampled_dot, "<rows[b], W[idx[b,j]]>");
}
