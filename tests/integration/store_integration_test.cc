// The persistent context store through the real binaries: contexts survive a restart, deletes stick,
// a store written for another model is refused (FAILED_PRECONDITION), a corrupted one reports
// DATA_LOSS, and a server killed mid-ingest never leaves a half-written context visible.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/integration/subprocess.h"

namespace squeezeserve::testing {
namespace {

namespace fs = std::filesystem;

// squeezectl exits 10 + the gRPC status code.
constexpr int kExitNotFound = 10 + 5;
constexpr int kExitFailedPrecondition = 10 + 9;
constexpr int kExitDataLoss = 10 + 15;

class StoreIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = fs::temp_directory_path() /
             absl::StrCat("squeezeserve-store-it-", getpid(), "-",
                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(store_);
  }
  void TearDown() override {
    if (server_) server_->Stop(30);
    fs::remove_all(store_);
  }

  // (Re)starts the server on the store with `model`.
  void StartServer(const std::string& model = REFERENCE_MODEL_DIR,
                   const std::vector<std::string>& extra = {}) {
    if (server_) EXPECT_EQ(server_->Stop(30), 0);
    server_ = std::make_unique<ServerProcess>();
    std::vector<std::string> argv = {SQUEEZESERVE_BIN, "--model", model, "--listen", "127.0.0.1:0",
                                     "--store", store_.string(), "--threads", "1", "--log_level=warn"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::optional<std::string> address = server_->Start(argv, 60);
    ASSERT_TRUE(address.has_value());
    address_ = *address;
    // The model loads after the listening line; info answers once it has.
    for (int i = 0; i < 300 && Ctl({"info"}).exit_code != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  CommandResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {SQUEEZECTL_BIN, "--server", address_, "--timeout", "120"});
    return RunCommand(args);
  }

  static std::string TokenList(int n) {
    std::vector<int> ids;
    for (int i = 0; i < n; ++i) ids.push_back(3 + (i * 37 + 11) % 997);
    return absl::StrJoin(ids, ",");
  }

  // Greedy continuation of a fixed query on `context`, as JSON; exit code in `code`.
  nlohmann::json Generate(const std::string& context, int* code) {
    CommandResult r = Ctl({"generate", "--json", "--context", context, "--tokens", "5,6,7,8", "--max_new_tokens",
                           "12", "--ignore_eos", "--logprobs"});
    *code = r.exit_code;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
  }

  fs::path store_;
  std::string address_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(StoreIntegrationTest, ContextsSurviveARestartAndDeletesStick) {
  StartServer();
  CommandResult ingest = Ctl({"ingest", "--id", "manual", "--tokens", TokenList(600)});
  ASSERT_EQ(ingest.exit_code, 0) << ingest.err;
  int code = -1;
  nlohmann::json before = Generate("manual", &code);
  ASSERT_EQ(code, 0);
  EXPECT_TRUE(fs::exists(store_ / "manual" / "manifest.json"));

  StartServer();  // a fresh process: nothing in memory
  CommandResult list = Ctl({"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("manual"), std::string::npos) << list.out;
  nlohmann::json after = Generate("manual", &code);
  ASSERT_EQ(code, 0);
  EXPECT_EQ(after["token_ids"], before["token_ids"]);
  EXPECT_EQ(after["usage"]["cached_tokens"], before["usage"]["cached_tokens"]);

  ASSERT_EQ(Ctl({"delete", "--context", "manual"}).exit_code, 0);
  StartServer();
  EXPECT_EQ(Ctl({"get", "--context", "manual"}).exit_code, kExitNotFound);
  EXPECT_FALSE(fs::exists(store_ / "manual"));
}

TEST_F(StoreIntegrationTest, AnotherModelIsRefusedAndCorruptionIsDataLoss) {
  StartServer();
  ASSERT_EQ(Ctl({"ingest", "--id", "doc", "--tokens", TokenList(300)}).exit_code, 0);
  ASSERT_EQ(Ctl({"ingest", "--id", "doc2", "--tokens", TokenList(200)}).exit_code, 0);

  StartServer(OTHER_MODEL_DIR);
  int code = -1;
  Generate("doc", &code);
  EXPECT_EQ(code, kExitFailedPrecondition);

  StartServer();
  const fs::path tensors = store_ / "doc2" / "tensors.safetensors";
  ASSERT_TRUE(fs::exists(tensors));
  {
    std::fstream f(tensors, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(tensors) / 2));
    f.put('\x7f');
  }
  Generate("doc2", &code);
  EXPECT_EQ(code, kExitDataLoss);
  Generate("doc", &code);  // the intact neighbour still serves
  EXPECT_EQ(code, 0);
}

// Tier of each listed context, by id.
std::map<std::string, std::string> Tiers(const std::string& list_json) {
  std::map<std::string, std::string> tiers;
  for (const auto& info : nlohmann::json::parse(list_json).value("contexts", nlohmann::json::array())) {
    tiers[info.value("context_id", "")] = info.value("tier", "");
  }
  return tiers;
}

// A resident-bytes limit drops the least recently used context from memory; it reloads from disk on
// demand with identical outputs.
TEST_F(StoreIntegrationTest, EvictedContextsReloadWithIdenticalOutputs) {
  StartServer(REFERENCE_MODEL_DIR, {"--max_resident_context_bytes=1"});  // room for the newest only
  ASSERT_EQ(Ctl({"ingest", "--id", "a", "--tokens", TokenList(400)}).exit_code, 0);
  int code = -1;
  nlohmann::json first = Generate("a", &code);
  ASSERT_EQ(code, 0);
  ASSERT_EQ(Ctl({"ingest", "--id", "b", "--tokens", TokenList(500)}).exit_code, 0);
  auto tiers = Tiers(Ctl({"list", "--json"}).out);
  EXPECT_EQ(tiers["a"], "disk");
  EXPECT_NE(tiers["b"], "disk");

  nlohmann::json again = Generate("a", &code);  // reloads a, evicts b
  ASSERT_EQ(code, 0);
  EXPECT_EQ(again["token_ids"], first["token_ids"]);
  EXPECT_EQ(again["logprobs"], first["logprobs"]);
  tiers = Tiers(Ctl({"list", "--json"}).out);
  EXPECT_NE(tiers["a"], "disk");
  EXPECT_EQ(tiers["b"], "disk");
}

// Three tiers: device memory with room for one context, host memory with room for one, then disk.
// Contexts step down device -> host -> disk as newer ones arrive and come back on demand (from host
// memory by a copy, from disk by a load) with identical outputs.
TEST_F(StoreIntegrationTest, HostTierParksContextsBetweenDeviceAndDisk) {
  StartServer(REFERENCE_MODEL_DIR);
  ASSERT_EQ(Ctl({"ingest", "--id", "probe", "--tokens", TokenList(420)}).exit_code, 0);
  const nlohmann::json probe = nlohmann::json::parse(Ctl({"get", "--context", "probe", "--json"}).out);
  const uint64_t largest = std::stoull(probe.value("kv_bytes", "0")) + std::stoull(probe.value("index_bytes", "0"));
  ASSERT_GT(largest, 0u);
  ASSERT_EQ(Ctl({"delete", "--context", "probe"}).exit_code, 0);

  StartServer(REFERENCE_MODEL_DIR, {"--max_resident_context_bytes=1",
                                    absl::StrCat("--max_host_context_bytes=", largest)});
  int code = -1;
  std::map<std::string, nlohmann::json> first;
  for (const auto& [id, tokens] : std::vector<std::pair<std::string, int>>{{"a", 400}, {"b", 410}, {"c", 420}}) {
    ASSERT_EQ(Ctl({"ingest", "--id", id, "--tokens", TokenList(tokens)}).exit_code, 0);
    first[id] = Generate(id, &code);
    ASSERT_EQ(code, 0);
  }
  auto tiers = Tiers(Ctl({"list", "--json"}).out);
  EXPECT_EQ(tiers["a"], "disk");
  EXPECT_EQ(tiers["b"], "host");
  EXPECT_EQ(tiers["c"], "device");

  nlohmann::json again = Generate("a", &code);  // from disk; c parks in host memory, b drops to disk
  ASSERT_EQ(code, 0);
  EXPECT_EQ(again["token_ids"], first["a"]["token_ids"]);
  EXPECT_EQ(again["logprobs"], first["a"]["logprobs"]);
  tiers = Tiers(Ctl({"list", "--json"}).out);
  EXPECT_EQ(tiers["a"], "device");
  EXPECT_EQ(tiers["b"], "disk");
  EXPECT_EQ(tiers["c"], "host");

  again = Generate("c", &code);  // back from host memory
  ASSERT_EQ(code, 0);
  EXPECT_EQ(again["token_ids"], first["c"]["token_ids"]);
  EXPECT_EQ(again["logprobs"], first["c"]["logprobs"]);
  tiers = Tiers(Ctl({"list", "--json"}).out);
  EXPECT_EQ(tiers["a"], "host");
  EXPECT_EQ(tiers["b"], "disk");
  EXPECT_EQ(tiers["c"], "device");
}

// Three replicas share one store: a context ingested through one is served by the others.
TEST_F(StoreIntegrationTest, ReplicasSharingAStoreServeEachOthersContexts) {
  std::vector<std::unique_ptr<ServerProcess>> replicas;
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    replicas.push_back(std::make_unique<ServerProcess>());
    std::optional<std::string> address = replicas.back()->Start(
        {SQUEEZESERVE_BIN, "--model", REFERENCE_MODEL_DIR, "--listen", "127.0.0.1:0", "--store", store_.string(),
         "--threads", "1", "--log_level=warn"},
        60);
    ASSERT_TRUE(address.has_value());
    addresses.push_back(*address);
  }
  auto ctl_at = [&](int replica, std::vector<std::string> args) {
    args.insert(args.begin(), {SQUEEZECTL_BIN, "--server", addresses[replica], "--timeout", "120"});
    return RunCommand(args);
  };
  for (int i = 0; i < 3; ++i) {
    for (int tries = 0; tries < 300 && ctl_at(i, {"info"}).exit_code != 0; ++tries) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ASSERT_EQ(ctl_at(0, {"ingest", "--id", "shared", "--tokens", TokenList(500)}).exit_code, 0);
  std::vector<std::string> generate = {"generate", "--json", "--context", "shared", "--tokens", "9,10,11",
                                       "--max_new_tokens", "10", "--ignore_eos"};
  CommandResult on_owner = ctl_at(0, generate);
  CommandResult on_other = ctl_at(1, generate);  // loads the context from the shared store
  ASSERT_EQ(on_owner.exit_code, 0) << on_owner.err;
  ASSERT_EQ(on_other.exit_code, 0) << on_other.err;
  EXPECT_EQ(nlohmann::json::parse(on_other.out)["token_ids"], nlohmann::json::parse(on_owner.out)["token_ids"]);
  EXPECT_NE(ctl_at(2, {"list", "--json"}).out.find("shared"), std::string::npos);
  // squeezectl's client-side routing over all three replicas gives the same answer.
  std::vector<std::string> routed = {SQUEEZECTL_BIN, "--server", absl::StrJoin(addresses, ","), "--timeout", "120"};
  routed.insert(routed.end(), generate.begin(), generate.end());
  CommandResult via_ring = RunCommand(routed);
  ASSERT_EQ(via_ring.exit_code, 0) << via_ring.err;
  EXPECT_EQ(nlohmann::json::parse(via_ring.out)["token_ids"], nlohmann::json::parse(on_owner.out)["token_ids"]);
  for (auto& replica : replicas) EXPECT_EQ(replica->Stop(30), 0);
}

// kill -9 at several points of an ingest: after a restart every listed context verifies and loads,
// and nothing half-written is visible.
TEST_F(StoreIntegrationTest, KilledDuringIngestLeavesNothingHalfWritten) {
  const std::string tokens = TokenList(3000);
  int complete = 0;
  for (int delay_ms : {100, 400, 900, 1600, 2500, 8000}) {
    StartServer(REFERENCE_MODEL_DIR, {"--prefill_chunk", "32"});
    const std::string id = absl::StrCat("big-", delay_ms);
    std::thread ingest([&] { Ctl({"ingest", "--id", id, "--tokens", tokens}); });
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    server_->Kill();
    server_.reset();
    ingest.join();
    StartServer();
    CommandResult list = Ctl({"list", "--json"});
    ASSERT_EQ(list.exit_code, 0) << list.err;
    for (const auto& entry : fs::directory_iterator(store_)) {
      const std::string name = entry.path().filename().string();
      EXPECT_NE(name[0], '.') << "a temporary survived the restart: " << name;
      int code = -1;
      Generate(name, &code);
      EXPECT_EQ(code, 0) << "context " << name << " is visible but does not load";
      if (name == id) ++complete;
    }
  }
  // Not asserted (it depends on the machine's speed), but logged: how many kills came after publication.
  std::cout << complete << " of 6 kills landed after the context was published\n";
}

}  // namespace
}  // namespace squeezeserve::testing
