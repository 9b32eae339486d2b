// A C interface to sentencepiece, built as its own shared module and loaded by tokenizer.cc with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece bundles its own copy of protobuf-lite and exports those
// google::protobuf symbols. In a process that also loads libprotobuf.so (gRPC, libtorch) the two
// copies interpose on each other and the process crashes during static initialization. Loaded this
// way, sentencepiece binds to its own copy and nothing of it leaks into the global symbol scope.
#include <sentencepiece_processor.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {

void* squeezeserve_spm_load(const char* path, char* error, size_t error_size) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    std::snprintf(error, error_size, "%s", status.ToString().c_str());
    delete processor;
    return nullptr;
  }
  return processor;
}

void squeezeserve_spm_free(void* handle) { delete static_cast<sentencepiece::SentencePieceProcessor*>(handle); }

int squeezeserve_spm_piece_size(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize();
}

// Returns a malloc'ed array (free with squeezeserve_spm_free_buffer) and its length in *count.
int32_t* squeezeserve_spm_encode(void* handle, const char* text, size_t length, size_t* count) {
  std::vector<int> ids;
  static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, length), &ids).IgnoreError();
  *count = ids.size();
  auto* out = static_cast<int32_t*>(std::malloc(sizeof(int32_t) * (ids.size() + 1)));
  for (size_t i = 0; i < ids.size(); ++i) out[i] = ids[i];
  return out;
}

// Returns a malloc'ed string (free with squeezeserve_spm_free_buffer) and its length in *length.
char* squeezeserve_spm_decode(void* handle, const int32_t* ids, size_t count, size_t* length) {
  std::vector<int> pieces(ids, ids + count);
  std::string text;
  static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(pieces, &text).IgnoreError();
  *length = text.size();
  auto* out = static_cast<char*>(std::malloc(text.size() + 1));
  std::memcpy(out, text.data(), text.size());
  out[text.size()] = '\0';
  return out;
}

void squeezeserve_spm_free_buffer(void* buffer) { std::free(buffer); }

}  // extern "C"
