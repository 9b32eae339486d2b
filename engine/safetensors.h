// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
// an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the
// raw tensor bytes. Files are memory-mapped, never copied whole. Plain C++ (no libtorch).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace squeezeserve {

enum class DType { kF32, kF16, kBF16, kI32, kI64 };

// "F32", "F16", "BF16", "I32", "I64" as written in safetensors headers.
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

// A tensor inside a mapped file: valid as long as the file object lives. `data` is not necessarily
// aligned to the element size.
struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
};

// One memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  // Validates the header: known dtypes, offsets inside the file, sizes matching the shapes.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // The "__metadata__" string map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The raw JSON header bytes (what a model fingerprint hashes).
  std::string header_bytes() const;
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  size_t header_size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The weights of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json.
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(const std::string& dir);

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  // Files in a stable order (sorted by file name).
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
};

// A tensor to write: `data` points at numel * DTypeSize(dtype) bytes, row-major.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Writes a .safetensors file (tensors in the given order, header padded to 8 bytes as the reference
// implementation does) and fsyncs it. InvalidArgument on duplicate or empty names; ResourceExhausted
// on a full disk, quota or file size limit; Internal on other I/O failures. With `sha256_hex`, also
// the hex SHA-256 of exactly the bytes written, hashed on a second thread while the first writes (a
// stored context is many GB: hashing after writing cost a second pass over the file).
// `progress` (when set) hears (bytes written, bytes of the file) after each piece of at most 64 MiB
// is written: a stored 512K-token context is ~76 GB, minutes of writing.
using WriteProgressFn = std::function<void(uint64_t bytes_written, uint64_t bytes_total)>;
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {},
                              std::string* sha256_hex = nullptr, const WriteProgressFn& progress = nullptr);

// IEEE half / bfloat16 conversions (round to nearest even), used by tests and the writer's callers.
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);
float BFloat16ToFloat(uint16_t bits);

}  // namespace squeezeserve
