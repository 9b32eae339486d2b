#include "kernels/append_kv_ref.h"

namespace squeezeserve::kernels {

void append_dense_kv_ref(const AttentionShape& shape, const SequenceLayerF32* seqs, const NewKvF32& source,
                         const int64_t* src_rows) {
  const int64_t n = shape.query_len, D = shape.head_dim;
  for (int b = 0; b < shape.batch; ++b) {
    const SequenceLayerF32& s = seqs[b];
    // Dense parts are written through the view (the reference owns host memory it may write).
    float* keys = const_cast<float*>(s.dense_keys);
    float* values = const_cast<float*>(s.dense_values);
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      for (int64_t t = 0; t < n; ++t) {
        const int64_t src = src_rows[b] + t, dst = s.dense_len - n + t;
        for (int64_t d = 0; d < D; ++d) {
          keys[h * s.dense_head_stride + dst * D + d] =
              source.keys[h * source.key_head_stride + src * source.key_row_stride + d];
          values[h * s.dense_head_stride + dst * D + d] =
              source.values[h * source.value_head_stride + src * source.value_row_stride + d];
        }
      }
    }
  }
}

}  // namespace squeezeserve::kernels
