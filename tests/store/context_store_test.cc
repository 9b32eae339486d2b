// ContextStore over a real engine (the tiny reference checkpoint) and a real store directory: tenants'
// namespaces, per-context linearizability (Delete vs. a racing load), replicas sharing a directory
// (two stores over one directory, as two servers), and what loading refuses: a manifest edited or
// copied under another name, non-finite keys under matching checksums, a full disk.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "engine/context_files.h"
#include "engine/context_store.h"
#include "gtest/gtest.h"

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;

const Engine& TheEngine() {
  static Engine* engine = [] {
    EngineOptions options;
    options.model_dir = REFERENCE_MODEL_DIR;
    options.num_threads = 1;
    absl::StatusOr<std::unique_ptr<Engine>> loaded = Engine::Load(options);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *engine;
}

std::shared_ptr<const Context> Ingested(const std::string& id, int tokens, int salt = 0) {
  std::vector<int32_t> ids;
  for (int i = 0; i < tokens; ++i) ids.push_back(3 + (i * 37 + salt * 101 + 11) % 997);
  IndexOptions index;
  index.dense_only = true;
  absl::StatusOr<std::shared_ptr<const Context>> context =
      const_cast<Engine&>(TheEngine()).Ingest(id, std::move(ids), index, nullptr, nullptr);
  EXPECT_TRUE(context.ok()) << context.status();
  return *context;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteAll(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

class ContextStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("squeezeserve-context-store-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A store over dir_ (a "replica"); checks the disk on every access unless told otherwise.
  std::unique_ptr<ContextStore> Replica(absl::Duration revalidate = absl::ZeroDuration()) {
    auto store = std::make_unique<ContextStore>();
    store->AttachDirectory(&TheEngine(), dir_.string());
    store->SetRevalidateInterval(revalidate);
    return store;
  }

  fs::path dir_;
};

TEST_F(ContextStoreTest, TenantsHaveTheirOwnNamespaces) {
  auto store = Replica();
  ASSERT_TRUE(store->Put("acme", Ingested("doc", 64)).ok());
  ASSERT_TRUE(store->Put("", Ingested("doc", 96)).ok());
  EXPECT_EQ((*store->Get({"acme", "doc"}))->summary().num_tokens, 64);
  EXPECT_EQ((*store->Get({"", "doc"}))->summary().num_tokens, 96);
  EXPECT_TRUE(absl::IsNotFound(store->Get({"globex", "doc"}).status()));
  EXPECT_TRUE(store->List("globex").empty());
  ASSERT_EQ(store->List("acme").size(), 1u);
  EXPECT_EQ(store->ListAll().size(), 2u);
  ASSERT_TRUE(store->Delete({"acme", "doc"}).ok());
  EXPECT_TRUE(absl::IsNotFound(store->Delete({"globex", "doc"})));
  EXPECT_TRUE(store->Get({"", "doc"}).ok()) << "another tenant's delete of the same id";
  // After a restart too (a fresh store over the same directory).
  EXPECT_TRUE(Replica()->Get({"", "doc"}).ok());
  EXPECT_TRUE(absl::IsNotFound(Replica()->Get({"acme", "doc"}).status()));
}

TEST_F(ContextStoreTest, QuotasCapContextsAndBytesPerTenant) {
  auto store = Replica();
  const uint64_t one = Ingested("probe", 64)->summary().kv_bytes;
  TenantLimits limits{2, 3 * one};
  ASSERT_TRUE(store->Put("acme", Ingested("a", 64), limits).ok());
  ASSERT_TRUE(store->Put("acme", Ingested("b", 64), limits).ok());
  absl::Status third = store->Put("acme", Ingested("c", 64), limits);
  EXPECT_TRUE(absl::IsResourceExhausted(third)) << third;
  EXPECT_TRUE(absl::IsResourceExhausted(store->CheckRoom({"acme", "c"}, limits)));
  EXPECT_TRUE(store->CheckRoom({"acme", "a"}, limits).ok()) << "replacing does not add a context";
  absl::Status big = store->Put("acme", Ingested("a", 64 * 3), limits);
  EXPECT_TRUE(absl::IsResourceExhausted(big)) << "3 + 1 contexts' bytes: " << big;
  EXPECT_TRUE(store->Put("acme", Ingested("a", 96), limits).ok());
  EXPECT_TRUE(store->Put("globex", Ingested("c", 64), limits).ok()) << "quotas are per tenant";
}

// A Delete that returned leaves nothing behind, however it interleaves with a load of the same
// context (the load finishing after the delete must not put it back, nor fail with DATA_LOSS).
TEST_F(ContextStoreTest, DeleteRacingALoadIsLinearizable) {
  auto writer = Replica();
  for (int round = 0; round < 16; ++round) {
    ASSERT_TRUE(writer->Put("", Ingested("doc", 1000, round)).ok());
    auto reader = Replica(absl::Seconds(60));  // not resident there: its Get loads from disk
    std::atomic<bool> go{false};
    absl::StatusOr<std::shared_ptr<const Context>> got;
    std::thread load([&] {
      while (!go.load()) {
      }
      got = reader->Get({"", "doc"});
    });
    go = true;
    std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 8)));
    absl::Status deleted = reader->Delete({"", "doc"});
    load.join();
    ASSERT_TRUE(deleted.ok()) << round << ": " << deleted;
    EXPECT_TRUE(got.ok() || absl::IsNotFound(got.status())) << round << ": " << got.status();
    absl::StatusOr<std::shared_ptr<const Context>> after = reader->Get({"", "doc"});
    EXPECT_TRUE(absl::IsNotFound(after.status())) << round << ": the deleted context is still served";
    EXPECT_TRUE(reader->List("").empty()) << round;
  }
}

TEST_F(ContextStoreTest, ReplicasSeeAnotherReplicasDeleteAndReplacementWithinTheBound) {
  auto a = Replica();
  auto b = Replica(absl::Milliseconds(300));
  ASSERT_TRUE(a->Put("", Ingested("doc", 64)).ok());
  ASSERT_TRUE(b->Get({"", "doc"}).ok());  // resident in b
  ASSERT_TRUE(a->Delete({"", "doc"}).ok());
  // Within the bound b may still serve its copy; past it, never.
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  EXPECT_TRUE(absl::IsNotFound(b->Get({"", "doc"}).status())) << "served after another replica's delete";
  EXPECT_TRUE(b->List("").empty());

  ASSERT_TRUE(a->Put("", Ingested("doc", 64)).ok());
  ASSERT_EQ((*b->Get({"", "doc"}))->summary().num_tokens, 64);
  ASSERT_TRUE(a->Put("", Ingested("doc", 80)).ok());  // replaced
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  EXPECT_EQ((*b->Get({"", "doc"}))->summary().num_tokens, 80) << "served a stale version";
}

TEST_F(ContextStoreTest, AnEditedOrCopiedManifestDoesNotLoadOrList) {
  auto store = Replica();
  ASSERT_TRUE(store->Put("", Ingested("doc", 64)).ok());
  // A copy under another name: its manifest names "doc".
  fs::copy(dir_ / "doc", dir_ / "copy", fs::copy_options::recursive);
  auto fresh = Replica();
  EXPECT_EQ(fresh->Get({"", "copy"}).status().code(), absl::StatusCode::kDataLoss);
  ASSERT_EQ(fresh->List("").size(), 1u) << "a copied directory lists twice";
  // The same copy moved into a tenant's namespace.
  fs::create_directories(dir_ / "@acme");
  fs::copy(dir_ / "doc", dir_ / "@acme" / "doc", fs::copy_options::recursive);
  EXPECT_EQ(fresh->Get({"acme", "doc"}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(fresh->List("acme").empty());
  // An edited size, with the tensors' checksum untouched.
  std::string manifest = ReadAll(dir_ / "doc" / "manifest.json");
  const size_t at = manifest.find("\"num_tokens\": 64");
  ASSERT_NE(at, std::string::npos) << manifest;
  manifest.replace(at, 16, "\"num_tokens\": 65");
  WriteAll(dir_ / "doc" / "manifest.json", manifest);
  absl::StatusOr<std::shared_ptr<const Context>> edited = Replica()->Get({"", "doc"});
  EXPECT_EQ(edited.status().code(), absl::StatusCode::kDataLoss) << edited.status();
  EXPECT_TRUE(absl::StrContains(edited.status().message(), "manifest checksum")) << edited.status();
}

// Writes NaN into the first value of `tensor` of <dir>/tensors.safetensors and re-seals every
// checksum, as a buggy writer (or someone who knows the format) would.
void PoisonTensor(const fs::path& dir, const std::string& tensor) {
  std::string bytes = ReadAll(dir / "tensors.safetensors");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(bytes[i]);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_size));
  const size_t begin = 8 + header_size + header[tensor]["data_offsets"][0].get<size_t>();
  const std::string dtype = header[tensor]["dtype"];
  if (dtype == "F32") {
    bytes.replace(begin, 4, std::string("\x00\x00\xc0\x7f", 4));
  } else {  // BF16 / F16 NaN
    bytes.replace(begin, 2, dtype == "BF16" ? std::string("\xc0\x7f", 2) : std::string("\x00\x7e", 2));
  }
  WriteAll(dir / "tensors.safetensors", bytes);
  nlohmann::json manifest = nlohmann::json::parse(ReadAll(dir / "manifest.json"));
  manifest["files"]["tensors.safetensors"]["sha256"] = Sha256Hex(bytes);
  const std::string text = manifest.dump(2);
  WriteAll(dir / "manifest.json", text);
  WriteAll(dir / "manifest.sha256", Sha256Hex(text) + "\n");
}

TEST_F(ContextStoreTest, NonFiniteKeysOrValuesUnderMatchingChecksumsAreDataLoss) {
  for (const char* tensor : {"layers.0.keys", "layers.1.values"}) {
    auto store = Replica();
    ASSERT_TRUE(store->Put("", Ingested("doc", 64)).ok());
    PoisonTensor(dir_ / "doc", tensor);
    absl::StatusOr<std::shared_ptr<const Context>> loaded = Replica()->Get({"", "doc"});
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << tensor << ": " << loaded.status();
    EXPECT_TRUE(absl::StrContains(loaded.status().message(), "not finite")) << loaded.status();
  }
}

TEST_F(ContextStoreTest, AFullDiskIsResourceExhaustedWithoutPathsAndLeavesNothing) {
  auto store = Replica();
  signal(SIGXFSZ, SIG_IGN);
  rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit small = saved;
  small.rlim_cur = 20000;  // bytes per file: the tensors of 512 tokens do not fit
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  absl::Status put = store->Put("", Ingested("big", 512));
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
  EXPECT_TRUE(absl::IsResourceExhausted(put)) << put;
  EXPECT_FALSE(absl::StrContains(put.message(), dir_.string())) << put;
  EXPECT_FALSE(absl::StrContains(put.message(), "/")) << "no server paths: " << put;
  EXPECT_TRUE(absl::IsNotFound(store->Get({"", "big"}).status()));
  for (const auto& entry : fs::directory_iterator(dir_)) ADD_FAILURE() << "left behind: " << entry.path();
}

// Put's progress follows the writing of the context's file up to its size.
TEST_F(ContextStoreTest, PutReportsTheWritingsProgress) {
  auto store = Replica();
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  ASSERT_TRUE(store->Put("", Ingested("doc", 64), {}, [&](uint64_t written, uint64_t total) {
                   calls.emplace_back(written, total);
                 }).ok());
  ASSERT_FALSE(calls.empty());
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_GE(calls[i].first, calls[i - 1].first);
  EXPECT_EQ(calls.back().first, calls.back().second);
  EXPECT_EQ(calls.back().second, fs::file_size(dir_ / "doc" / "tensors.safetensors"));
}

// A context larger than the disk's free space fails at once: before an ingest's prefill (CheckRoom
// with the bytes storing it will at least write) and before PublishContextDir writes a byte.
TEST_F(ContextStoreTest, TooLittleFreeSpaceFailsBeforeAnyWork) {
  auto store = Replica();
  const uint64_t huge = uint64_t{1} << 62;  // more than any disk has free
  absl::Status room = store->CheckRoom({"acme", "big"}, TenantLimits{}, huge);
  EXPECT_TRUE(absl::IsResourceExhausted(room)) << room;
  EXPECT_TRUE(absl::StrContains(room.message(), "GB free")) << room;
  EXPECT_FALSE(absl::StrContains(room.message(), "/")) << "no server paths: " << room;
  EXPECT_TRUE(store->CheckRoom({"acme", "big"}, TenantLimits{}, 1).ok());
  // The engine's per-token KV size is what a context's summary counts (the ingest's lower bound).
  EXPECT_EQ(TheEngine().model_info().kv_bytes_per_token * 64, Ingested("probe", 64)->summary().kv_bytes);
  ContextStore memory_only;  // no directory: nothing will be written
  EXPECT_TRUE(memory_only.CheckRoom({"", "big"}, TenantLimits{}, huge).ok());

  // 2^51 bytes of tensor (data never read: the sizes are checked first).
  const TensorToWrite keys{"keys", DType::kBF16, {int64_t{1} << 40, 1024}, nullptr};
  absl::Status published = PublishContextDir(dir_.string(), "big", {{"model_fingerprint", "x"}}, {keys});
  EXPECT_TRUE(absl::IsResourceExhausted(published)) << published;
  EXPECT_TRUE(absl::StrContains(published.message(), "context 'big' needs")) << published;
  if (fs::exists(dir_)) {
    for (const auto& entry : fs::directory_iterator(dir_)) ADD_FAILURE() << "left behind: " << entry.path();
  }
}

}  // namespace
}  // namespace squeezeserve
