// The store loader fuzzed through the real engine (libtorch; so no libFuzzer/ASan build: a seeded
// mutation run, time-bounded). Takes the committed seeds (real context directories of the reference
// model, store_input.h format), mutates them — bytes, and fields of the manifest's JSON (sizes,
// layout, thresholds, tensor names) — re-seals the checksums so the mutation reaches the loader, and
// loads each through Engine::LoadContext. Every outcome must be a status (DATA_LOSS,
// FAILED_PRECONDITION, ...), never a crash; a context that loads must generate.
//
//   store_loader_run --model DIR --corpus DIR [--seconds 20] [--seed 1]
//   store_loader_run --model DIR --make_seeds DIR      (writes the seeds from fresh ingests)
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "tests/fuzz/store_input.h"

namespace fs = std::filesystem;
using namespace squeezeserve;  // NOLINT

namespace {

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A random numeric leaf of `json` (objects and arrays walked at random), or nullptr.
nlohmann::json* RandomLeaf(nlohmann::json& json, std::mt19937_64& rng, int depth = 0) {
  if (json.is_number() || json.is_string() || json.is_boolean()) return &json;
  if (depth > 8 || json.empty() || !(json.is_object() || json.is_array())) return nullptr;
  auto it = json.begin();
  std::advance(it, std::uniform_int_distribution<size_t>(0, json.size() - 1)(rng));
  return RandomLeaf(*it, rng, depth + 1);
}

// One mutation of a store input: a JSON field of the manifest, or raw bytes anywhere.
std::string Mutate(std::string input, std::mt19937_64& rng) {
  auto pick = [&rng](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  const size_t manifest_size = static_cast<uint8_t>(input[1]) | (static_cast<uint8_t>(input[2]) << 8);
  if (pick(3) != 0 && 3 + manifest_size <= input.size()) {
    nlohmann::json manifest = nlohmann::json::parse(input.substr(3, manifest_size), nullptr, false);
    if (manifest.is_object()) {
      if (nlohmann::json* leaf = RandomLeaf(manifest, rng)) {
        static const double kNumbers[] = {-1, 0, 1, 2, 3, 7, 100, 1e9, -1e18, NAN, INFINITY, 0.5};
        switch (pick(4)) {
          case 0: *leaf = kNumbers[pick(12)]; break;
          case 1: *leaf = leaf->is_number() ? nlohmann::json(leaf->get<double>() + 1) : nlohmann::json(""); break;
          case 2: *leaf = "layers.0.keys"; break;
          default: *leaf = nullptr;
        }
      }
      const std::string text = manifest.dump(2);
      if (text.size() < 65536) {
        input = input.substr(0, 1) + static_cast<char>(text.size() & 0xff) + static_cast<char>(text.size() >> 8) +
                text + input.substr(3 + manifest_size);
      }
      return input;
    }
  }
  const size_t at = 3 + pick(input.size() - 3);
  switch (pick(4)) {
    case 0: input[at] = static_cast<char>(input[at] ^ (1 << pick(8))); break;
    case 1: input[at] = "\x00\xff\x7f\x80\"9-{"[pick(8)]; break;
    case 2: input.erase(at, std::min<size_t>(pick(64), input.size() - at)); break;
    default: input.insert(at, input.substr(at, std::min<size_t>(pick(64), input.size() - at)));
  }
  return input;
}

int MakeSeeds(Engine& engine, const fs::path& out) {
  fs::create_directories(out);
  const fs::path store = fs::temp_directory_path() / ("squeezeserve-seeds-" + std::to_string(getpid()));
  struct Seed {
    const char* name;
    int levels;
    bool dense_only;
  };
  for (const Seed& seed : {Seed{"dense-only", 2, true}, Seed{"one-level", 1, false}, Seed{"two-level", 2, false}}) {
    std::vector<int32_t> tokens;
    for (int i = 0; i < 96; ++i) tokens.push_back(3 + (i * 37) % 900);
    IndexOptions index;
    index.dense_only = seed.dense_only;
    index.levels = seed.levels;
    index.observation_window = 16;
    index.centroid_fraction = 0.1f;
    index.coarse_centroid_fraction = 0.05f;
    auto context = engine.Ingest("ctx", tokens, index, nullptr, nullptr);
    if (!context.ok() || !engine.SaveContext(**context, store.string(), nullptr).ok()) {
      std::cerr << "store_loader_run: could not make seed " << seed.name << "\n";
      return 1;
    }
    std::ofstream(out / (std::string("seed-") + seed.name), std::ios::binary) << fuzz::ReadStoreInput(store / "ctx");
  }
  fs::remove_all(store);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, corpus, make_seeds;
  double seconds = 20;
  uint64_t seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") model = value;
    if (flag == "--corpus") corpus = value;
    if (flag == "--make_seeds") make_seeds = value;
    if (flag == "--seconds") seconds = std::stod(value);
    if (flag == "--seed") seed = std::stoull(value);
  }
  EngineOptions options;
  options.model_dir = model;
  options.num_threads = 1;
  auto engine = Engine::Load(options);
  if (!engine.ok()) {
    std::cerr << "store_loader_run: " << engine.status() << "\n";
    return 1;
  }
  if (!make_seeds.empty()) return MakeSeeds(**engine, make_seeds);

  std::vector<std::string> seeds;
  for (const auto& entry : fs::directory_iterator(corpus)) seeds.push_back(ReadFile(entry.path()));
  if (seeds.empty()) {
    std::cerr << "store_loader_run: no seeds in " << corpus << "\n";
    return 1;
  }
  const fs::path store = fs::temp_directory_path() / ("squeezeserve-loader-run-" + std::to_string(getpid()));
  const std::string fingerprint = (*engine)->model_info().fingerprint;
  std::mt19937_64 rng(seed);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int runs = 0, loaded = 0;
  std::map<absl::StatusCode, int> outcomes;
  for (; std::chrono::steady_clock::now() < deadline || runs < static_cast<int>(seeds.size()); ++runs) {
    std::string input = seeds[runs % seeds.size()];
    // The first pass loads every seed as it is (they must load); later ones mutate 1-4 times.
    if (runs >= static_cast<int>(seeds.size())) {
      for (int m = 1 + static_cast<int>(rng() % 4); m > 0; --m) input = Mutate(std::move(input), rng);
    }
    if (!fuzz::WriteStoreInput(input, store, "ctx", fingerprint)) continue;
    auto context = (*engine)->LoadContext(store.string(), "ctx");
    ++outcomes[context.status().code()];
    if (runs < static_cast<int>(seeds.size()) && !context.ok()) {
      std::cerr << "store_loader_run: seed " << runs << " does not load: " << context.status() << "\n";
      return 1;
    }
    if (!context.ok()) continue;
    ++loaded;
    // What verifies must be usable: a short generation over it, dense and squeezed.
    for (AttentionMode mode : {AttentionMode::kDense, AttentionMode::kSqueezed}) {
      SamplingOptions sampling;
      sampling.max_new_tokens = 2;
      AttentionOptions attention;
      attention.mode = (*context)->summary().has_index ? mode : AttentionMode::kDense;
      attention.sparsity = 0.5f;
      auto generation = (*engine)->StartGeneration(*context, {5, 6, 7}, sampling, attention);
      if (!generation.ok()) continue;
      for (int step = 0; step < 2; ++step) {
        if (!(*generation)->Next().ok()) break;
      }
    }
  }
  fs::remove_all(store);
  std::cout << "store_loader_run: " << runs << " inputs, " << loaded << " loaded;";
  for (const auto& [code, count] : outcomes) std::cout << " " << absl::StatusCodeToString(code) << "=" << count;
  std::cout << std::endl;
  for (const auto& [code, count] : outcomes) {
    if (code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown) {
      std::cerr << "store_loader_run: the loader answered " << absl::StatusCodeToString(code)
                << " (a crafted file must be DATA_LOSS or FAILED_PRECONDITION)\n";
      return 1;
    }
  }
  return 0;
}
