# CUDA sources of squeezeserve_kernels_cuda; shared with the standalone bench/kernels project.
set(SQUEEZESERVE_KERNELS_CUDA_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/selection.cu
  ${CMAKE_CURRENT_LIST_DIR}/selection_decode.cu
  ${CMAKE_CURRENT_LIST_DIR}/selection_tensor_core.cu
  ${CMAKE_CURRENT_LIST_DIR}/selection_lse_wgmma.cu
  ${CMAKE_CURRENT_LIST_DIR}/selection_generic.cu
  ${CMAKE_CURRENT_LIST_DIR}/decode_attention.cu
  ${CMAKE_CURRENT_LIST_DIR}/bundle_selection.cu
  ${CMAKE_CURRENT_LIST_DIR}/prefill_attention.cu
  ${CMAKE_CURRENT_LIST_DIR}/prefill_attention_ws.cu
  ${CMAKE_CURRENT_LIST_DIR}/norm_rope.cu
  ${CMAKE_CURRENT_LIST_DIR}/append_kv.cu
  ${CMAKE_CURRENT_LIST_DIR}/launch.cu
  ${CMAKE_CURRENT_LIST_DIR}/read_ahead.cu
  ${CMAKE_CURRENT_LIST_DIR}/nearest_centroid.cu
  ${CMAKE_CURRENT_LIST_DIR}/nearest_centroid_wgmma.cu
  ${CMAKE_CURRENT_LIST_DIR}/skinny_gemm.cu)
