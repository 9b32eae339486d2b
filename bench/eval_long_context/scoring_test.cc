// longctx_eval's scoring rule, configuration names and table layout.
#include "bench/eval_long_context/scoring.h"

#include <cmath>

#include <gtest/gtest.h>

namespace longctx_eval {
namespace {

TEST(ExactMatch, AnswerMustBeThePrefixAfterLeadingWhitespace) {
  EXPECT_TRUE(ExactMatch(" 123456\n", "123456\nlookup"));
  EXPECT_TRUE(ExactMatch(" 123456\n", "   123456"));        // trailing newline of the answer not required
  EXPECT_TRUE(ExactMatch(" 31206.\n", " 31206. Remember"));  // anything after the answer is ignored
  EXPECT_FALSE(ExactMatch(" 123456\n", "12345"));           // cut short
  EXPECT_FALSE(ExactMatch(" 123456\n", "x 123456"));        // not a prefix
  EXPECT_FALSE(ExactMatch(" 123456\n", ""));
  // Indentation inside a function body must match exactly; the first line's leading spaces may not.
  const std::string body = "    x = 1\n    return x\n";
  EXPECT_TRUE(ExactMatch(body, "  x = 1\n    return x\n\ndef"));
  EXPECT_FALSE(ExactMatch(body, "    x = 1\n  return x\n"));
}

TEST(Configs, AllIsDensePlusFlatAndHierarchicalAtFourLevels) {
  std::string error;
  auto configs = ParseConfigs("all", &error);
  ASSERT_TRUE(configs) << error;
  ASSERT_EQ(configs->size(), 9u);
  EXPECT_EQ((*configs)[0].name, "dense");
  EXPECT_FALSE((*configs)[0].squeezed);
  EXPECT_EQ((*configs)[1].label, "squeezed 1-level 50%");
  EXPECT_FLOAT_EQ((*configs)[4].sparsity, 0.9f);
  EXPECT_FALSE((*configs)[4].hierarchical);
  EXPECT_EQ((*configs)[8].name, "hier90");
  EXPECT_EQ((*configs)[8].label, "hierarchical 90%");
  EXPECT_TRUE((*configs)[8].hierarchical);

  configs = ParseConfigs("dense, flat90,hier70", &error);
  ASSERT_TRUE(configs) << error;
  ASSERT_EQ(configs->size(), 3u);
  EXPECT_FLOAT_EQ((*configs)[2].sparsity, 0.7f);
  EXPECT_FALSE(ParseConfigs("sparse90", &error));
  EXPECT_NE(error.find("sparse90"), std::string::npos);
  EXPECT_FALSE(ParseConfigs("flat100", &error));
}

TEST(Configs, DroppedSuffixAsksThePapersPruning) {
  std::string error;
  auto configs = ParseConfigs("flat90,flat90-dropped,hier90-dropped", &error);
  ASSERT_TRUE(configs) << error;
  ASSERT_EQ(configs->size(), 3u);
  EXPECT_FALSE((*configs)[0].dropped);
  EXPECT_TRUE((*configs)[1].dropped);
  EXPECT_EQ((*configs)[1].name, "flat90-dropped");
  EXPECT_EQ((*configs)[1].label, "squeezed 1-level 90%, pruned dropped");
  EXPECT_NE((*configs)[0].name, (*configs)[1].name);  // distinct cells in the results
  EXPECT_TRUE((*configs)[2].hierarchical && (*configs)[2].dropped);
  EXPECT_FALSE(ParseConfigs("dense-dropped", &error));
  EXPECT_NE(error.find("dense-dropped"), std::string::npos);
}

TEST(Configs, NoAheadSuffixTurnsReadAheadOffAndCombinesWithDropped) {
  std::string error;
  auto configs = ParseConfigs("flat90-noahead,hier90-noahead-dropped", &error);
  ASSERT_TRUE(configs) << error;
  ASSERT_EQ(configs->size(), 2u);
  EXPECT_TRUE((*configs)[0].no_read_ahead && !(*configs)[0].dropped);
  EXPECT_EQ((*configs)[0].name, "flat90-noahead");
  EXPECT_EQ((*configs)[0].label, "squeezed 1-level 90%, no read-ahead");
  EXPECT_TRUE((*configs)[1].no_read_ahead && (*configs)[1].dropped && (*configs)[1].hierarchical);
  EXPECT_EQ((*configs)[1].name, "hier90-noahead-dropped");
  EXPECT_FALSE((*ParseConfigs("flat90", &error))[0].no_read_ahead);
  EXPECT_FALSE(ParseConfigs("dense-noahead", &error));
  EXPECT_FALSE(ParseConfigs("flat90-dropped-noahead", &error));  // one order only
}

TEST(Results, TableHasOneRowPerConfigAndATaskColumnEach) {
  std::string error;
  Results results(*ParseConfigs("dense,flat90", &error));
  Cell& dense = results.at("passkey", 4096, "dense");
  dense.n = 4;
  dense.correct = 3;
  dense.kv_fraction_sum = 4;
  dense.kv_fraction_n = 4;
  Cell& sparse = results.at("passkey", 4096, "flat90");
  sparse.n = 4;
  sparse.correct = 1;
  sparse.kv_fraction_sum = 0.6;
  sparse.kv_fraction_n = 4;
  Cell& kv = results.at("kv_retrieval", 8192, "dense");
  kv.n = 2;
  kv.correct = 2;
  Cell& ppl = results.at("perplexity", 4096, "dense");
  ppl.logprob_sum = -2 * std::log(5.0);
  ppl.scored_tokens = 2;
  ppl.kv_fraction_sum = 1;
  ppl.kv_fraction_n = 1;

  EXPECT_EQ(results.AccuracyTasks(), (std::vector<std::string>{"kv_retrieval", "passkey"}));
  const std::string table = results.MarkdownTable(4096);
  EXPECT_NE(table.find("| config | KV loaded | kv_retrieval | passkey | Avg. | ppl |"), std::string::npos) << table;
  EXPECT_NE(table.find("| dense | 1.000 | – | 75.0 | 75.0 | 5.000 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| squeezed 1-level 90% | 0.150 | – | 25.0 | 25.0 | – |"), std::string::npos) << table;
  const std::string all = results.MarkdownTable(0);
  EXPECT_NE(all.find("| dense | 1.000 | 100.0 | 75.0 | 87.5 | 5.000 |"), std::string::npos) << all;

  const nlohmann::json j = results.ToJson();
  EXPECT_EQ(j["configs"].size(), 2u);
  EXPECT_EQ(j["results"].size(), 4u);
  bool found = false;
  for (const auto& r : j["results"]) {
    if (r["task"] == "perplexity") {
      EXPECT_NEAR(r["ppl"].get<double>(), 5.0, 1e-9);
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace longctx_eval
