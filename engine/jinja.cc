// Jinja subset: rendering (values with Python semantics, filters, tests, loops).
#include "engine/jinja.h"

#include <utf8proc.h>

#include <charconv>
#include <cmath>
#include <ctime>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/jinja_ast.h"
#include "engine/tokenizer_utf8.h"

namespace squeezeserve {
namespace jinja {
namespace {

// A template value: JSON data (as Python sees it), Undefined, a namespace() object (shared and
// mutable), or a callable (a global function, or a method bound to `data`).
struct Value {
  enum Kind { kUndefined, kData, kNamespace, kCallable } kind = kUndefined;
  Json data;
  std::shared_ptr<Json> ns;
  std::string name;  // kCallable: function / method; kUndefined: what was looked up

  static Value Undefined(std::string what) {
    Value v;
    v.name = std::move(what);
    return v;
  }
  static Value Of(Json j) {
    Value v;
    v.kind = kData;
    v.data = std::move(j);
    return v;
  }
  static Value Callable(std::string name, Json self = nullptr) {
    Value v;
    v.kind = kCallable;
    v.name = std::move(name);
    v.data = std::move(self);
    return v;
  }
  bool undefined() const { return kind == kUndefined; }
  bool is_string() const { return kind == kData && data.is_string(); }
};

[[noreturn]] void Fail(const std::string& message) { throw RenderError(message); }

const Json& DataOf(const Value& v, const char* what) {
  if (v.kind == Value::kNamespace) return *v.ns;
  if (v.kind != Value::kData) Fail(absl::StrCat(what, ": '", v.name, "' is undefined"));
  return v.data;
}

// ---------------------------------------------------------------------------------------------------
// Python formatting.

std::u32string Chars(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) out.push_back(utf8::Next(s, i));
  return out;
}

std::string Utf8(const std::u32string& chars) {
  std::string out;
  for (char32_t c : chars) utf8::Append(out, c);
  return out;
}

std::string PyFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // shortest round-trip digits: [-]d[.ddd]e[+-]XX
  const bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(sci.substr(e + 1));
  std::string out;
  if (exponent >= -4 && exponent < 16) {  // Python's repr: fixed notation in this range
    if (exponent < 0) {
      out = "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out = digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp[8];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp;
  }
  return negative ? "-" + out : out;
}

std::string PyRepr(const Json& j);

std::string PyStrRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == quote || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", u);
      out += hex;
    } else {
      out += c;
    }
  }
  return out + quote;
}

std::string PyRepr(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "None";
    case Json::value_t::boolean: return j.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer: return std::to_string(j.get<int64_t>());
    case Json::value_t::number_unsigned: return std::to_string(j.get<uint64_t>());
    case Json::value_t::number_float: return PyFloat(j.get<double>());
    case Json::value_t::string: return PyStrRepr(j.get<std::string>());
    case Json::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < j.size(); ++i) absl::StrAppend(&out, i ? ", " : "", PyRepr(j[i]));
      return out + "]";
    }
    case Json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (auto it = j.begin(); it != j.end(); ++it) {
        absl::StrAppend(&out, first ? "" : ", ", PyStrRepr(it.key()), ": ", PyRepr(it.value()));
        first = false;
      }
      return out + "}";
    }
    default: return "";
  }
}

// str(value) as Jinja prints it.
std::string Str(const Value& v) {
  if (v.kind == Value::kUndefined) return "";
  if (v.kind == Value::kNamespace) return "<Namespace " + PyRepr(*v.ns) + ">";
  if (v.kind == Value::kCallable) return "<function " + v.name + ">";
  if (v.data.is_string()) return v.data.get<std::string>();
  return PyRepr(v.data);
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (u < 0x20) {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "\\u%04x", u);
          out += hex;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// Python's json.dumps(x, ensure_ascii=False, indent=indent, separators=..., sort_keys=...), which is
// transformers' tojson filter.
void DumpJson(const Json& j, int indent, const std::string& item_sep, const std::string& key_sep, bool sort_keys,
              int level, std::string& out) {
  auto newline = [&](int depth) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * depth), ' ');
  };
  switch (j.type()) {
    case Json::value_t::null: out += "null"; return;
    case Json::value_t::boolean: out += j.get<bool>() ? "true" : "false"; return;
    case Json::value_t::number_float: {
      const double d = j.get<double>();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : PyFloat(d);
      return;
    }
    case Json::value_t::string: out += JsonString(j.get<std::string>()); return;
    case Json::value_t::array:
      if (j.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < j.size(); ++i) {
        if (i) out += item_sep;
        newline(level + 1);
        DumpJson(j[i], indent, item_sep, key_sep, sort_keys, level + 1, out);
      }
      newline(level);
      out += ']';
      return;
    case Json::value_t::object: {
      if (j.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::string> keys;
      for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
      if (sort_keys) std::sort(keys.begin(), keys.end());
      out += '{';
      for (size_t i = 0; i < keys.size(); ++i) {
        if (i) out += item_sep;
        newline(level + 1);
        out += JsonString(keys[i]) + key_sep;
        DumpJson(j[keys[i]], indent, item_sep, key_sep, sort_keys, level + 1, out);
      }
      newline(level);
      out += '}';
      return;
    }
    default: out += j.dump();
  }
}

// ---------------------------------------------------------------------------------------------------
// Python semantics.

bool Truthy(const Value& v) {
  if (v.kind == Value::kUndefined) return false;
  if (v.kind != Value::kData) return true;
  const Json& j = v.data;
  switch (j.type()) {
    case Json::value_t::null: return false;
    case Json::value_t::boolean: return j.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return j.get<int64_t>() != 0;
    case Json::value_t::number_float: return j.get<double>() != 0;
    case Json::value_t::string: return !j.get_ref<const std::string&>().empty();
    default: return !j.empty();
  }
}

bool IsNumber(const Json& j) { return j.is_number() || j.is_boolean(); }
double AsDouble(const Json& j) { return j.is_boolean() ? (j.get<bool>() ? 1 : 0) : j.get<double>(); }
int64_t AsInt(const Json& j) { return j.is_boolean() ? (j.get<bool>() ? 1 : 0) : j.get<int64_t>(); }
bool IsIntegral(const Json& j) { return j.is_boolean() || j.is_number_integer(); }

bool Equal(const Json& a, const Json& b) {
  if (IsNumber(a) && IsNumber(b)) {
    if (IsIntegral(a) && IsIntegral(b)) return AsInt(a) == AsInt(b);
    return AsDouble(a) == AsDouble(b);
  }
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!Equal(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end() || !Equal(it.value(), *other)) return false;
    }
    return true;
  }
  return a == b;
}

bool Equal(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;
  if (a.kind == Value::kUndefined) return true;
  if (a.kind == Value::kNamespace) return a.ns == b.ns;
  return Equal(a.data, b.data);
}

int Compare(const Json& a, const Json& b, const std::string& op) {
  if (IsNumber(a) && IsNumber(b)) {
    const double x = AsDouble(a), y = AsDouble(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.get<std::string>().compare(b.get<std::string>());
  if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      if (!Equal(a[i], b[i])) return Compare(a[i], b[i], op);
    }
    return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
  }
  Fail(absl::StrCat("'", op, "' not supported between ", a.type_name(), " and ", b.type_name()));
}

bool Contains(const Value& container, const Value& item) {
  if (container.kind == Value::kUndefined) return false;
  const Json& c = DataOf(container, "in");
  if (c.is_string()) {
    if (!item.is_string()) Fail("'in <string>' requires a string on the left");
    return c.get<std::string>().find(item.data.get<std::string>()) != std::string::npos;
  }
  if (c.is_array()) {
    for (const Json& e : c) {
      if (item.kind == Value::kData && Equal(e, item.data)) return true;
    }
    return false;
  }
  if (c.is_object()) return item.is_string() && c.contains(item.data.get<std::string>());
  Fail(absl::StrCat("argument of type ", c.type_name(), " is not iterable"));
}

// Items of a for loop / list filter: list elements, dict keys, string characters.
std::vector<Json> Items(const Value& v) {
  if (v.kind == Value::kUndefined) return {};
  const Json& j = DataOf(v, "iterate");
  std::vector<Json> out;
  if (j.is_array()) {
    for (const Json& e : j) out.push_back(e);
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) out.push_back(it.key());
  } else if (j.is_string()) {
    for (char32_t c : Chars(j.get<std::string>())) out.push_back(Utf8(std::u32string(1, c)));
  } else {
    Fail(absl::StrCat("'", j.type_name(), "' object is not iterable"));
  }
  return out;
}

int64_t Length(const Value& v) {
  if (v.kind == Value::kUndefined) return 0;
  const Json& j = DataOf(v, "length");
  if (j.is_string()) return static_cast<int64_t>(Chars(j.get<std::string>()).size());
  if (j.is_array() || j.is_object()) return static_cast<int64_t>(j.size());
  Fail(absl::StrCat("object of type '", j.type_name(), "' has no len()"));
}

bool IsPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::u32string c = Chars(s);
  std::u32string set;
  const bool custom = chars != nullptr && chars->is_string();
  if (custom) set = Chars(chars->data.get<std::string>());
  auto strip = [&](char32_t ch) { return custom ? set.find(ch) != std::u32string::npos : IsPySpace(ch); };
  size_t b = 0, e = c.size();
  if (left) {
    while (b < e && strip(c[b])) ++b;
  }
  if (right) {
    while (e > b && strip(c[e - 1])) --e;
  }
  return Utf8(c.substr(b, e - b));
}

std::string MapCase(const std::string& s, int mode) {  // 0 lower, 1 upper, 2 capitalize, 3 Python title
  std::u32string c = Chars(s);
  bool previous_cased = false;
  for (size_t i = 0; i < c.size(); ++i) {
    const char32_t ch = c[i];
    const bool cased = utf8proc_tolower(ch) != ch || utf8proc_toupper(ch) != ch;
    if (mode == 0) c[i] = utf8proc_tolower(ch);
    else if (mode == 1) c[i] = utf8proc_toupper(ch);
    else if (mode == 2) c[i] = i == 0 ? utf8proc_toupper(ch) : utf8proc_tolower(ch);
    else c[i] = previous_cased ? utf8proc_tolower(ch) : utf8proc_toupper(ch);
    previous_cased = cased;
  }
  return Utf8(c);
}

Value Slice(const Value& v, const std::optional<int64_t> parts[3]) {
  const Json& j = DataOf(v, "slice");
  const int64_t step = parts[2].value_or(1);
  if (step == 0) Fail("slice step cannot be zero");
  std::u32string chars;
  const bool is_string = j.is_string();
  if (is_string) chars = Chars(j.get<std::string>());
  else if (!j.is_array()) Fail(absl::StrCat("'", j.type_name(), "' object is not subscriptable"));
  const int64_t n = is_string ? static_cast<int64_t>(chars.size()) : static_cast<int64_t>(j.size());
  auto clamp = [&](std::optional<int64_t> x, int64_t fallback) {
    if (!x) return fallback;
    int64_t i = *x < 0 ? *x + n : *x;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t start = clamp(parts[0], step > 0 ? 0 : n - 1), stop = clamp(parts[1], step > 0 ? n : -1);
  std::u32string out_chars;
  Json out = Json::array();
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (is_string) out_chars.push_back(chars[i]);
    else out.push_back(j[i]);
  }
  return Value::Of(is_string ? Json(Utf8(out_chars)) : out);
}

Value GetItem(const Value& v, const Value& key) {
  if (v.kind == Value::kUndefined) Fail(absl::StrCat("'", v.name, "' is undefined"));
  const Json& j = DataOf(v, "subscript");
  if (j.is_object()) {
    if (key.is_string()) {
      auto it = j.find(key.data.get<std::string>());
      if (it != j.end()) return Value::Of(*it);
    }
    return Value::Undefined(Str(key));
  }
  if ((j.is_array() || j.is_string()) && key.kind == Value::kData && IsIntegral(key.data)) {
    int64_t i = AsInt(key.data);
    if (j.is_string()) {
      const std::u32string c = Chars(j.get<std::string>());
      if (i < 0) i += static_cast<int64_t>(c.size());
      if (i < 0 || i >= static_cast<int64_t>(c.size())) return Value::Undefined("index");
      return Value::Of(Utf8(std::u32string(1, c[i])));
    }
    if (i < 0) i += static_cast<int64_t>(j.size());
    if (i < 0 || i >= static_cast<int64_t>(j.size())) return Value::Undefined("index");
    return Value::Of(j[i]);
  }
  return Value::Undefined(Str(key));
}

Value GetAttr(const Value& v, const std::string& name) {
  if (v.kind == Value::kUndefined) Fail(absl::StrCat("'", v.name, "' is undefined (reading .", name, ")"));
  if (v.kind == Value::kNamespace) {
    auto it = v.ns->find(name);
    return it == v.ns->end() ? Value::Undefined(name) : Value::Of(*it);
  }
  if (v.kind != Value::kData) return Value::Undefined(name);
  const Json& j = v.data;
  static const char* kStringMethods[] = {"strip", "lstrip", "rstrip", "upper", "lower", "title", "capitalize",
                                         "startswith", "endswith", "split", "replace", "count", "find", "join"};
  static const char* kDictMethods[] = {"items", "keys", "values", "get"};
  if (j.is_string()) {
    for (const char* m : kStringMethods) {
      if (name == m) return Value::Callable(absl::StrCat("str.", name), j);
    }
    return Value::Undefined(name);
  }
  if (j.is_object()) {
    for (const char* m : kDictMethods) {
      if (name == m) return Value::Callable(absl::StrCat("dict.", name), j);
    }
    auto it = j.find(name);
    return it == j.end() ? Value::Undefined(name) : Value::Of(*it);
  }
  return Value::Undefined(name);
}

// ---------------------------------------------------------------------------------------------------
// The renderer.

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> named;
  const Value* Get(size_t index, const char* name) const {
    for (const auto& [n, v] : named) {
      if (n == name) return &v;
    }
    return index < positional.size() ? &positional[index] : nullptr;
  }
};

class Renderer {
 public:
  explicit Renderer(const Json& variables) {
    scopes_.emplace_back();
    for (auto it = variables.begin(); it != variables.end(); ++it) scopes_[0][it.key()] = Value::Of(it.value());
  }

  void Render(const Node& node) {
    switch (node.kind) {
      case Node::kBody:
        for (const NodePtr& child : node.children) {
          Render(*child);
          if (break_ || continue_) return;
        }
        return;
      case Node::kText: out_ += node.text; return;
      case Node::kOutput: out_ += Str(Eval(*node.expr)); return;
      case Node::kIf:
        for (const NodePtr& branch : node.children) {
          if (Truthy(Eval(*branch->expr))) {
            Render(*branch);
            return;
          }
        }
        if (node.else_body) Render(*node.else_body);
        return;
      case Node::kFor: RenderFor(node); return;
      case Node::kSet: {
        Value value = Eval(*node.expr);
        if (!node.attribute.empty()) {
          Value target = Lookup(node.target);
          if (target.kind != Value::kNamespace) Fail(absl::StrCat("cannot assign attribute on non-namespace '", node.target, "'"));
          (*target.ns)[node.attribute] = DataOf(value, "set");
        } else {
          scopes_.back()[node.target] = std::move(value);
        }
        return;
      }
      case Node::kBreak: break_ = true; return;
      case Node::kContinue: continue_ = true; return;
    }
  }

  std::string& out() { return out_; }

 private:
  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    static const char* kGlobals[] = {"raise_exception", "namespace", "range", "strftime_now", "dict"};
    for (const char* g : kGlobals) {
      if (name == g) return Value::Callable(g);
    }
    return Value::Undefined(name);
  }

  void Bind(std::map<std::string, Value>& scope, const std::vector<std::string>& targets, const Json& item) {
    if (targets.size() == 1) {
      scope[targets[0]] = Value::Of(item);
      return;
    }
    if (!item.is_array() || item.size() != targets.size()) Fail("cannot unpack a loop item into the loop variables");
    for (size_t i = 0; i < targets.size(); ++i) scope[targets[i]] = Value::Of(item[i]);
  }

  void RenderFor(const Node& node) {
    std::vector<Json> items = Items(Eval(*node.expr));
    if (node.filter) {
      std::vector<Json> kept;
      for (const Json& item : items) {
        scopes_.emplace_back();
        Bind(scopes_.back(), node.targets, item);
        const bool keep = Truthy(Eval(*node.filter));
        scopes_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (node.else_body) Render(*node.else_body);
      return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      scopes_.emplace_back();  // each iteration has its own scope: `set` inside the loop stays there
      Bind(scopes_.back(), node.targets, items[i]);
      Json loop = {{"index", i + 1}, {"index0", i}, {"revindex", n - i}, {"revindex0", n - i - 1},
                   {"first", i == 0}, {"last", i == n - 1}, {"length", n}, {"depth", 1}, {"depth0", 0}};
      if (i > 0) loop["previtem"] = items[i - 1];
      if (i + 1 < n) loop["nextitem"] = items[i + 1];
      scopes_.back()["loop"] = Value::Of(std::move(loop));
      Render(*node.children[0]);
      scopes_.pop_back();
      continue_ = false;
      if (break_) {
        break_ = false;
        break;
      }
    }
  }

  Args EvalArgs(const Expr& e) {
    Args a;
    for (const ExprPtr& arg : e.args) a.positional.push_back(Eval(*arg));
    for (size_t i = 0; i < e.kwargs.size(); ++i) a.named.emplace_back(e.kwarg_names[i], Eval(*e.kwargs[i]));
    return a;
  }

  Value Eval(const Expr& e) {
    switch (e.kind) {
      case Expr::kLiteral: return Value::Of(e.literal);
      case Expr::kName: return Lookup(e.name);
      case Expr::kGetAttr: return GetAttr(Eval(*e.children[0]), e.name);
      case Expr::kGetItem: return GetItem(Eval(*e.children[0]), Eval(*e.args[0]));
      case Expr::kSlice: {
        std::optional<int64_t> parts[3];
        for (int k = 0; k < 3; ++k) {
          if (!e.args[k]) continue;
          Value p = Eval(*e.args[k]);
          if (p.kind == Value::kData && p.data.is_null()) continue;
          if (p.kind != Value::kData || !IsIntegral(p.data)) Fail("slice indices must be integers");
          parts[k] = AsInt(p.data);
        }
        return Slice(Eval(*e.children[0]), parts);
      }
      case Expr::kCall: return Call(Eval(*e.children[0]), EvalArgs(e));
      case Expr::kFilter: return Filter(e.name, Eval(*e.children[0]), EvalArgs(e));
      case Expr::kTest: {
        const bool result = Test(e.name, Eval(*e.children[0]), EvalArgs(e));
        return Value::Of(e.negated ? !result : result);
      }
      case Expr::kUnary: {
        Value v = Eval(*e.children[0]);
        if (e.name == "not") return Value::Of(!Truthy(v));
        const Json& j = DataOf(v, "unary operator");
        if (!IsNumber(j)) Fail(absl::StrCat("bad operand type for unary ", e.name, ": '", j.type_name(), "'"));
        if (e.name == "+") return Value::Of(j);
        return IsIntegral(j) ? Value::Of(-AsInt(j)) : Value::Of(-AsDouble(j));
      }
      case Expr::kBinary: return Binary(e);
      case Expr::kCond:
        if (Truthy(Eval(*e.args[0]))) return Eval(*e.children[0]);
        return e.children.size() > 1 ? Eval(*e.children[1]) : Value::Undefined("conditional");
      case Expr::kList: {
        Json list = Json::array();
        for (const ExprPtr& c : e.children) list.push_back(DataOf(Eval(*c), "list item"));
        return Value::Of(std::move(list));
      }
      case Expr::kDict: {
        Json dict = Json::object();
        for (size_t i = 0; i < e.children.size(); ++i) {
          Value key = Eval(*e.args[i]);
          if (!key.is_string()) Fail("only string keys are supported in dict literals");
          dict[key.data.get<std::string>()] = DataOf(Eval(*e.children[i]), "dict value");
        }
        return Value::Of(std::move(dict));
      }
    }
    Fail("unknown expression");
  }

  Value Binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = Eval(*e.children[0]);
      return Truthy(a) ? Eval(*e.children[1]) : a;
    }
    if (op == "or") {
      Value a = Eval(*e.children[0]);
      return Truthy(a) ? a : Eval(*e.children[1]);
    }
    Value a = Eval(*e.children[0]), b = Eval(*e.children[1]);
    if (op == "==") return Value::Of(Equal(a, b));
    if (op == "!=") return Value::Of(!Equal(a, b));
    if (op == "in") return Value::Of(Contains(b, a));
    if (op == "not in") return Value::Of(!Contains(b, a));
    if (op == "~") return Value::Of(Str(a) + Str(b));
    const Json& x = DataOf(a, op.c_str());
    const Json& y = DataOf(b, op.c_str());
    if (op == "<") return Value::Of(Compare(x, y, op) < 0);
    if (op == "<=") return Value::Of(Compare(x, y, op) <= 0);
    if (op == ">") return Value::Of(Compare(x, y, op) > 0);
    if (op == ">=") return Value::Of(Compare(x, y, op) >= 0);
    if (op == "+") {
      if (x.is_string() && y.is_string()) return Value::Of(x.get<std::string>() + y.get<std::string>());
      if (x.is_array() && y.is_array()) {
        Json out = x;
        for (const Json& item : y) out.push_back(item);
        return Value::Of(std::move(out));
      }
    }
    if (op == "*" && (x.is_string() || y.is_string()) && (IsIntegral(x) || IsIntegral(y))) {
      const std::string s = x.is_string() ? x.get<std::string>() : y.get<std::string>();
      std::string out;
      for (int64_t i = 0; i < AsInt(x.is_string() ? y : x); ++i) out += s;
      return Value::Of(out);
    }
    if (!IsNumber(x) || !IsNumber(y)) {
      Fail(absl::StrCat("unsupported operand type(s) for ", op, ": '", x.type_name(), "' and '", y.type_name(), "'"));
    }
    const bool ints = IsIntegral(x) && IsIntegral(y);
    if (op == "/") {
      if (AsDouble(y) == 0) Fail("division by zero");
      return Value::Of(AsDouble(x) / AsDouble(y));
    }
    if (ints) {
      const int64_t p = AsInt(x), q = AsInt(y);
      if (op == "+") return Value::Of(p + q);
      if (op == "-") return Value::Of(p - q);
      if (op == "*") return Value::Of(p * q);
      if (op == "//" || op == "%") {
        if (q == 0) Fail("integer division or modulo by zero");
        int64_t quotient = p / q, remainder = p % q;
        if (remainder != 0 && ((remainder < 0) != (q < 0))) {
          --quotient;
          remainder += q;
        }
        return Value::Of(op == "//" ? quotient : remainder);
      }
      if (op == "**" && q >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < q; ++i) r *= p;
        return Value::Of(r);
      }
    }
    const double p = AsDouble(x), q = AsDouble(y);
    if (op == "+") return Value::Of(p + q);
    if (op == "-") return Value::Of(p - q);
    if (op == "*") return Value::Of(p * q);
    if (op == "//") return Value::Of(std::floor(p / q));
    if (op == "%") return Value::Of(p - q * std::floor(p / q));
    if (op == "**") return Value::Of(std::pow(p, q));
    Fail(absl::StrCat("unsupported operator ", op));
  }

  Value Call(const Value& f, const Args& a) {
    if (f.kind != Value::kCallable) Fail(absl::StrCat("'", f.kind == Value::kUndefined ? f.name : Str(f), "' is not callable"));
    const std::string& name = f.name;
    if (name == "raise_exception") {
      const Value* message = a.Get(0, "message");
      throw RenderError(message ? Str(*message) : "raise_exception()", /*raised=*/true);
    }
    if (name == "namespace" || name == "dict") {
      auto ns = std::make_shared<Json>(Json::object());
      if (!a.positional.empty()) {
        const Json& init = DataOf(a.positional[0], name.c_str());
        if (init.is_object()) *ns = init;
      }
      for (const auto& [k, v] : a.named) (*ns)[k] = DataOf(v, name.c_str());
      if (name == "dict") return Value::Of(*ns);
      Value v;
      v.kind = Value::kNamespace;
      v.ns = ns;
      return v;
    }
    if (name == "range") {
      std::vector<int64_t> n;
      for (const Value& v : a.positional) n.push_back(AsInt(DataOf(v, "range")));
      const int64_t start = n.size() > 1 ? n[0] : 0, stop = n.size() > 1 ? n[1] : (n.empty() ? 0 : n[0]);
      const int64_t step = n.size() > 2 ? n[2] : 1;
      if (step == 0) Fail("range() step must not be zero");
      Json out = Json::array();
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(i);
      return Value::Of(std::move(out));
    }
    if (name == "strftime_now") {
      const Value* format = a.Get(0, "format");
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof(buf), format ? Str(*format).c_str() : "", &tm);
      return Value::Of(std::string(buf, n));
    }
    const Json& self = f.data;
    if (name.rfind("str.", 0) == 0) {
      const std::string s = self.get<std::string>();
      const std::string m = name.substr(4);
      const Value* arg0 = a.Get(0, "x");
      if (m == "strip") return Value::Of(Strip(s, arg0, true, true));
      if (m == "lstrip") return Value::Of(Strip(s, arg0, true, false));
      if (m == "rstrip") return Value::Of(Strip(s, arg0, false, true));
      if (m == "upper") return Value::Of(MapCase(s, 1));
      if (m == "lower") return Value::Of(MapCase(s, 0));
      if (m == "capitalize") return Value::Of(MapCase(s, 2));
      if (m == "title") return Value::Of(MapCase(s, 3));
      if ((m == "startswith" || m == "endswith") && arg0 != nullptr) {
        std::vector<std::string> options;
        const Json& o = DataOf(*arg0, m.c_str());
        if (o.is_array()) {
          for (const Json& x : o) options.push_back(x.get<std::string>());
        } else {
          options.push_back(o.get<std::string>());
        }
        for (const std::string& p : options) {
          if (m == "startswith" ? s.rfind(p, 0) == 0 : (s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0)) {
            return Value::Of(true);
          }
        }
        return Value::Of(false);
      }
      if (m == "split") {
        Json out = Json::array();
        if (arg0 == nullptr || (arg0->kind == Value::kData && arg0->data.is_null())) {
          std::string word;
          for (char32_t c : Chars(s)) {
            if (IsPySpace(c)) {
              if (!word.empty()) out.push_back(word);
              word.clear();
            } else {
              utf8::Append(word, c);
            }
          }
          if (!word.empty()) out.push_back(word);
          return Value::Of(std::move(out));
        }
        const std::string sep = Str(*arg0);
        if (sep.empty()) Fail("empty separator");
        size_t last = 0;
        for (size_t at = s.find(sep); at != std::string::npos; at = s.find(sep, last)) {
          out.push_back(s.substr(last, at - last));
          last = at + sep.size();
        }
        out.push_back(s.substr(last));
        return Value::Of(std::move(out));
      }
      if (m == "replace" && a.positional.size() >= 2) return Value::Of(Replace(s, Str(a.positional[0]), Str(a.positional[1])));
      if (m == "count" && arg0) return Value::Of(static_cast<int64_t>(Count(s, Str(*arg0))));
      if (m == "find" && arg0) {
        const size_t at = s.find(Str(*arg0));
        return Value::Of(at == std::string::npos ? int64_t{-1} : static_cast<int64_t>(Chars(s.substr(0, at)).size()));
      }
      if (m == "join" && arg0) {
        std::string out;
        bool first = true;
        for (const Json& item : Items(*arg0)) {
          out += (first ? "" : s) + Str(Value::Of(item));
          first = false;
        }
        return Value::Of(out);
      }
    }
    if (name.rfind("dict.", 0) == 0) {
      const std::string m = name.substr(5);
      if (m == "items") {
        Json out = Json::array();
        for (auto it = self.begin(); it != self.end(); ++it) out.push_back(Json::array({it.key(), it.value()}));
        return Value::Of(std::move(out));
      }
      if (m == "keys" || m == "values") {
        Json out = Json::array();
        for (auto it = self.begin(); it != self.end(); ++it) out.push_back(m == "keys" ? Json(it.key()) : it.value());
        return Value::Of(std::move(out));
      }
      if (m == "get") {
        const Value* key = a.Get(0, "key");
        const Value* fallback = a.Get(1, "default");
        if (key != nullptr && key->is_string()) {
          auto it = self.find(key->data.get<std::string>());
          if (it != self.end()) return Value::Of(*it);
        }
        return fallback ? *fallback : Value::Of(nullptr);
      }
    }
    Fail(absl::StrCat("unsupported call to ", name));
  }

  static std::string Replace(const std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    std::string out;
    size_t last = 0;
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, last)) {
      out += s.substr(last, at - last) + to;
      last = at + from.size();
    }
    return out + s.substr(last);
  }
  static size_t Count(const std::string& s, const std::string& what) {
    if (what.empty()) return Chars(s).size() + 1;
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
    return n;
  }

  bool Test(const std::string& name, const Value& v, const Args& a) {
    const Value* arg = a.Get(0, "other");
    if (name == "defined") return !v.undefined();
    if (name == "undefined") return v.undefined();
    if (v.kind == Value::kUndefined) {
      if (name == "none" || name == "string" || name == "number" || name == "mapping" || name == "boolean" ||
          name == "integer" || name == "float" || name == "sequence" || name == "true" || name == "false") {
        return false;
      }
      if (name == "iterable") return true;  // jinja's Undefined can be iterated (as empty)
    }
    const Json* j = v.kind == Value::kData ? &v.data : nullptr;
    if (name == "none") return j && j->is_null();
    if (name == "boolean") return j && j->is_boolean();
    if (name == "true") return j && j->is_boolean() && j->get<bool>();
    if (name == "false") return j && j->is_boolean() && !j->get<bool>();
    if (name == "integer") return j && j->is_number_integer();
    if (name == "float") return j && j->is_number_float();
    if (name == "number") return j && (j->is_number() || j->is_boolean());
    if (name == "string") return j && j->is_string();
    if (name == "mapping") return (j && j->is_object()) || v.kind == Value::kNamespace;
    if (name == "iterable") return j && (j->is_array() || j->is_object() || j->is_string());
    if (name == "sequence") return j && (j->is_array() || j->is_object() || j->is_string());
    if (name == "callable") return v.kind == Value::kCallable;
    if (name == "equalto" || name == "eq" || name == "==" || name == "sameas") return arg && Equal(v, *arg);
    if (name == "ne" || name == "!=") return !(arg && Equal(v, *arg));
    if (name == "in") return arg && Contains(*arg, v);
    if (name == "lt" || name == "<" || name == "le" || name == "<=" || name == "gt" || name == ">" || name == "ge" ||
        name == ">=") {
      if (!arg) Fail(absl::StrCat("test ", name, " needs an argument"));
      const int c = Compare(DataOf(v, name.c_str()), DataOf(*arg, name.c_str()), name);
      if (name == "lt" || name == "<") return c < 0;
      if (name == "le" || name == "<=") return c <= 0;
      if (name == "gt" || name == ">") return c > 0;
      return c >= 0;
    }
    if (name == "odd" || name == "even" || name == "divisibleby") {
      const int64_t n = AsInt(DataOf(v, name.c_str()));
      if (name == "odd") return n % 2 != 0;
      if (name == "even") return n % 2 == 0;
      const int64_t d = arg ? AsInt(DataOf(*arg, name.c_str())) : 1;
      return d != 0 && n % d == 0;
    }
    if (name == "lower" || name == "upper") {
      const std::string s = Str(v);
      return s == MapCase(s, name == "lower" ? 0 : 1);
    }
    Fail(absl::StrCat("unsupported test '", name, "'"));
  }

  Value Filter(const std::string& name, const Value& v, const Args& a) {
    const Value* arg0 = a.Get(0, "");
    if (name == "trim") return Value::Of(Strip(Str(v), a.Get(0, "chars"), true, true));
    if (name == "length" || name == "count") return Value::Of(Length(v));
    if (name == "string") return Value::Of(Str(v));
    if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") {
      if (name == "safe") return v;
      std::string out;
      for (char c : Str(v)) {
        switch (c) {
          case '&': out += "&amp;"; break;
          case '<': out += "&lt;"; break;
          case '>': out += "&gt;"; break;
          case '"': out += "&#34;"; break;
          case '\'': out += "&#39;"; break;
          default: out += c;
        }
      }
      return Value::Of(out);
    }
    if (name == "upper") return Value::Of(MapCase(Str(v), 1));
    if (name == "lower") return Value::Of(MapCase(Str(v), 0));
    if (name == "capitalize") return Value::Of(MapCase(Str(v), 2));
    if (name == "title") {  // jinja's title: words split at runs of [-\s({\[<]
      std::u32string c = Chars(Str(v));
      bool start = true;
      for (char32_t& ch : c) {
        const bool delimiter = ch == '-' || IsPySpace(ch) || ch == '(' || ch == '{' || ch == '[' || ch == '<';
        if (delimiter) {
          start = true;
          continue;
        }
        ch = start ? utf8proc_toupper(ch) : utf8proc_tolower(ch);
        start = false;
      }
      return Value::Of(Utf8(c));
    }
    if (name == "replace" && a.positional.size() >= 2) {
      return Value::Of(Replace(Str(v), Str(a.positional[0]), Str(a.positional[1])));
    }
    if (name == "default" || name == "d") {
      const Value* boolean = a.Get(1, "boolean");
      const bool use_default = v.undefined() || (boolean && Truthy(*boolean) && !Truthy(v));
      if (!use_default) return v;
      return arg0 ? *arg0 : Value::Of("");
    }
    if (name == "tojson") {
      const Value* indent = a.Get(0, "indent");
      int spaces = -1;
      if (indent && indent->kind == Value::kData && IsIntegral(indent->data)) spaces = static_cast<int>(AsInt(indent->data));
      std::string item_sep = spaces >= 0 ? "," : ", ", key_sep = ": ";
      if (const Value* separators = a.Get(2, "separators"); separators && separators->kind == Value::kData &&
                                                           separators->data.is_array() && separators->data.size() == 2) {
        item_sep = separators->data[0].get<std::string>();
        key_sep = separators->data[1].get<std::string>();
      }
      const Value* sort = a.Get(3, "sort_keys");
      std::string out;
      DumpJson(DataOf(v, "tojson"), spaces, item_sep, key_sep, sort && Truthy(*sort), 0, out);
      return Value::Of(out);
    }
    if (name == "join") {
      const Value* attribute = a.Get(1, "attribute");
      const std::string sep = arg0 ? Str(*arg0) : (a.Get(0, "d") ? Str(*a.Get(0, "d")) : "");
      std::string out;
      bool first = true;
      for (const Json& item : Items(v)) {
        Value element = Value::Of(item);
        if (attribute) element = GetAttr(element, Str(*attribute));
        out += (first ? "" : sep) + Str(element);
        first = false;
      }
      return Value::Of(out);
    }
    if (name == "list") {
      Json out = Json::array();
      for (const Json& item : Items(v)) out.push_back(item);
      return Value::Of(std::move(out));
    }
    if (name == "first" || name == "last") {
      const std::vector<Json> items = Items(v);
      if (items.empty()) return Value::Undefined(name);
      return Value::Of(name == "first" ? items.front() : items.back());
    }
    if (name == "reverse") {
      if (v.is_string()) {
        std::u32string c = Chars(v.data.get<std::string>());
        std::reverse(c.begin(), c.end());
        return Value::Of(Utf8(c));
      }
      std::vector<Json> items = Items(v);
      std::reverse(items.begin(), items.end());
      return Value::Of(Json(items));
    }
    if (name == "items") {
      const Json& j = DataOf(v, "items");
      Json out = Json::array();
      for (auto it = j.begin(); it != j.end(); ++it) out.push_back(Json::array({it.key(), it.value()}));
      return Value::Of(std::move(out));
    }
    if (name == "int") {
      if (v.kind == Value::kData && IsNumber(v.data)) return Value::Of(static_cast<int64_t>(AsDouble(v.data)));
      try {
        return Value::Of(static_cast<int64_t>(std::stoll(Str(v))));
      } catch (...) {
        return arg0 ? *arg0 : Value::Of(0);
      }
    }
    if (name == "float") {
      if (v.kind == Value::kData && IsNumber(v.data)) return Value::Of(AsDouble(v.data));
      try {
        return Value::Of(std::stod(Str(v)));
      } catch (...) {
        return arg0 ? *arg0 : Value::Of(0.0);
      }
    }
    if (name == "abs") {
      const Json& j = DataOf(v, "abs");
      return IsIntegral(j) ? Value::Of(std::llabs(AsInt(j))) : Value::Of(std::fabs(AsDouble(j)));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool by_attribute = name == "selectattr" || name == "rejectattr";
      const bool keep_when = name == "select" || name == "selectattr";
      size_t next = 0;
      std::string attribute;
      if (by_attribute) {
        if (a.positional.empty()) Fail(absl::StrCat(name, " needs an attribute"));
        attribute = Str(a.positional[next++]);
      }
      std::string test = next < a.positional.size() ? Str(a.positional[next++]) : "";
      Args test_args;
      for (size_t k = next; k < a.positional.size(); ++k) test_args.positional.push_back(a.positional[k]);
      Json out = Json::array();
      for (const Json& item : Items(v)) {
        Value subject = Value::Of(item);
        if (by_attribute) subject = GetAttr(subject, attribute);
        const bool passed = test.empty() ? Truthy(subject) : Test(test, subject, test_args);
        if (passed == keep_when) out.push_back(item);
      }
      return Value::Of(std::move(out));
    }
    if (name == "map") {
      Json out = Json::array();
      const Value* attribute = a.Get(99, "attribute");
      for (const Json& item : Items(v)) {
        Value element = Value::Of(item);
        if (attribute) {
          element = GetAttr(element, Str(*attribute));
          if (element.undefined()) {
            if (const Value* fallback = a.Get(99, "default")) element = *fallback;
          }
        } else if (!a.positional.empty()) {
          Args rest;
          for (size_t k = 1; k < a.positional.size(); ++k) rest.positional.push_back(a.positional[k]);
          element = Filter(Str(a.positional[0]), element, rest);
        }
        out.push_back(DataOf(element, "map"));
      }
      return Value::Of(std::move(out));
    }
    if (name == "unique") {
      Json out = Json::array();
      for (const Json& item : Items(v)) {
        bool seen = false;
        for (const Json& o : out) seen = seen || Equal(o, item);
        if (!seen) out.push_back(item);
      }
      return Value::Of(std::move(out));
    }
    if (name == "sum") {
      Value total = Value::Of(0);
      for (const Json& item : Items(v)) {
        const Json& t = total.data;
        total = IsIntegral(t) && IsIntegral(item) ? Value::Of(AsInt(t) + AsInt(item)) : Value::Of(AsDouble(t) + AsDouble(item));
      }
      return total;
    }
    Fail(absl::StrCat("unsupported filter '", name, "'"));
  }

  std::vector<std::map<std::string, Value>> scopes_;
  std::string out_;
  bool break_ = false, continue_ = false;
};

}  // namespace
}  // namespace jinja

JinjaTemplate::~JinjaTemplate() = default;

absl::StatusOr<std::unique_ptr<JinjaTemplate>> JinjaTemplate::Parse(std::string_view source) {
  std::unique_ptr<JinjaTemplate> t(new JinjaTemplate());
  try {
    t->root_ = jinja::ParseTemplate(std::string(source));
  } catch (const jinja::ParseError& e) {
    return absl::FailedPreconditionError(absl::StrCat("chat template: ", e.what()));
  }
  return t;
}

absl::StatusOr<std::string> JinjaTemplate::Render(const nlohmann::ordered_json& variables) const {
  jinja::Renderer renderer(variables);
  try {
    renderer.Render(*root_);
  } catch (const jinja::RenderError& e) {
    return absl::InvalidArgumentError(e.raised ? std::string(e.what()) : absl::StrCat("chat template: ", e.what()));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", e.what()));
  }
  return std::move(renderer.out());
}

}  // namespace squeezeserve
