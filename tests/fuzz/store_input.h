// The store-loader fuzz input as a context directory on disk. One input is
//   [flags][manifest length: 2 bytes, little endian][manifest.json bytes][tensors.safetensors bytes]
// flags bit 0: re-seal — write the tensors' real SHA-256 and size into the manifest (when it parses as
// a JSON object) — bit 1: write manifest.sha256 for the manifest as it then is — and bit 2: set the
// manifest's model_fingerprint to the harness's model first. With all three set,
// the checksums verify and the bytes reach the parsers behind them (safetensors header, summary,
// layout, tensor names/dtypes/shapes/offsets, finiteness): what a crafted or buggy writer could
// produce. Plain C++ (no libtorch): shared by the libFuzzer target and the full-loader run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "engine/context_store.h"

namespace squeezeserve::fuzz {

// Writes the input as <store_dir>/<id>/; returns false when it is too short to hold the header.
inline bool WriteStoreInput(std::string_view input, const std::filesystem::path& store_dir, const std::string& id,
                            const std::string& fingerprint) {
  if (input.size() < 3) return false;
  const uint8_t flags = static_cast<uint8_t>(input[0]);
  const size_t manifest_size =
      std::min<size_t>(input.size() - 3, static_cast<uint8_t>(input[1]) | (static_cast<uint8_t>(input[2]) << 8));
  std::string manifest(input.substr(3, manifest_size));
  const std::string tensors(input.substr(3 + manifest_size));
  const std::filesystem::path dir = store_dir / id;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tensors.safetensors", std::ios::binary) << tensors;
  if (flags & 5) {
    nlohmann::json json = nlohmann::json::parse(manifest, nullptr, /*allow_exceptions=*/false);
    if (json.is_object()) {
      if (flags & 4) json["model_fingerprint"] = fingerprint;
      if (flags & 1) {
        json["files"] = nlohmann::json::object();
        json["files"]["tensors.safetensors"] = {{"sha256", Sha256Hex(tensors)}, {"bytes", tensors.size()}};
      }
      manifest = json.dump(2);
    }
  }
  std::ofstream(dir / "manifest.json", std::ios::binary) << manifest;
  if (flags & 2) std::ofstream(dir / "manifest.sha256", std::ios::binary) << Sha256Hex(manifest) << "\n";
  return true;
}

// The reverse, for making seeds out of a real context directory.
inline std::string ReadStoreInput(const std::filesystem::path& dir) {
  auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const std::string manifest = read(dir / "manifest.json");
  std::string out;
  out.push_back(7);
  out.push_back(static_cast<char>(manifest.size() & 0xff));
  out.push_back(static_cast<char>((manifest.size() >> 8) & 0xff));
  return out + manifest + read(dir / "tensors.safetensors");
}

}  // namespace squeezeserve::fuzz
