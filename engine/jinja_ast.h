// The parsed form of a Jinja subset template (engine/jinja.h): internal to jinja_parse.cc and jinja.cc.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace squeezeserve::jinja {

// Insertion-ordered like Python dicts: tojson and iteration keep the order of the request.
using Json = nlohmann::ordered_json;

// Parse and render failures travel as exceptions inside the interpreter only; JinjaTemplate turns
// them into absl::Status at its boundary.
struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RenderError : std::runtime_error {
  explicit RenderError(const std::string& message, bool raised = false) : std::runtime_error(message), raised(raised) {}
  bool raised;  // from raise_exception() in the template
};

struct Expr;
using ExprPtr = std::shared_ptr<Expr>;

struct Expr {
  enum Kind { kLiteral, kName, kGetAttr, kGetItem, kSlice, kCall, kFilter, kTest, kUnary, kBinary, kCond, kList, kDict };
  Kind kind;
  std::string name;               // name, attribute, filter, test or operator
  Json literal;                   // kLiteral
  std::vector<ExprPtr> children;  // operands; kCond: [then, else?]; kList items; kDict values
  std::vector<ExprPtr> args;      // call / filter / test arguments; kGetItem [key]; kSlice [a, b, c] (null = omitted);
                                  // kCond [condition]; kDict keys
  std::vector<std::string> kwarg_names;
  std::vector<ExprPtr> kwargs;
  bool negated = false;  // kTest: `is not`
};

struct Node;
using NodePtr = std::shared_ptr<Node>;

struct Node {
  enum Kind { kBody, kText, kOutput, kIf, kFor, kSet, kBreak, kContinue };
  Kind kind;
  std::string text;                // kText
  ExprPtr expr;                    // kOutput; kIf branch (a kBody child): its condition; kFor iterable; kSet value
  ExprPtr filter;                  // kFor: `if` clause
  std::vector<std::string> targets;  // kFor loop variables
  std::string target, attribute;   // kSet: name (and namespace attribute)
  std::vector<NodePtr> children;   // kBody: statements; kIf: branches; kFor: [body]
  NodePtr else_body;
};

// Throws ParseError.
NodePtr ParseTemplate(const std::string& source);

}  // namespace squeezeserve::jinja
