// Jinja subset: splitting the template into text and tags (with HF transformers' whitespace rules),
// and parsing tags and expressions into the tree of jinja_ast.h.
#include "engine/jinja_ast.h"

#include <cctype>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace squeezeserve::jinja {
namespace {

// ---------------------------------------------------------------------------------------------------
// Segments: text and tags, whitespace control applied.

struct Segment {
  enum Kind { kText, kOutput, kStatement } kind;
  std::string body;  // text, or the tag's inside (without delimiters and '-' / '+')
  int line;
};

bool IsSpaceOrTab(char c) { return c == ' ' || c == '\t'; }
bool IsWhite(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// The end of a tag that started at `from` (just after its opening delimiter): the position of `close`
// outside string literals.
size_t FindClose(const std::string& s, size_t from, const char* close) {
  char quote = 0;
  for (size_t i = from; i + 1 < s.size(); ++i) {
    const char c = s[i];
    if (quote) {
      if (c == '\\') ++i;
      else if (c == quote) quote = 0;
      continue;
    }
    if (c == '\'' || c == '"') quote = c;
    else if (c == close[0] && s[i + 1] == close[1]) return i;
  }
  return std::string::npos;
}

std::vector<Segment> Split(std::string source) {
  // Jinja normalizes the template's newlines; keep_trailing_newline=False drops one final newline.
  std::string normalized;
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  const std::string& s = normalized;

  std::vector<Segment> out;
  size_t pos = 0;
  int line = 1;
  bool strip_next = false;      // the previous tag ended with '-'
  bool trim_newline = false;    // the previous tag was a block or comment (trim_blocks)
  auto count_lines = [](const std::string& t) { return static_cast<int>(std::count(t.begin(), t.end(), '\n')); };
  while (pos <= s.size()) {
    size_t open = s.find('{', pos);
    while (open != std::string::npos && open + 1 < s.size() && s[open + 1] != '{' && s[open + 1] != '%' &&
           s[open + 1] != '#') {
      open = s.find('{', open + 1);
    }
    if (open + 1 >= s.size()) open = std::string::npos;
    std::string text = s.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (trim_newline && !text.empty() && text[0] == '\n') text.erase(0, 1);
    if (strip_next) {
      size_t k = 0;
      while (k < text.size() && IsWhite(text[k])) ++k;
      text.erase(0, k);
    }
    if (open == std::string::npos) {
      if (!text.empty()) out.push_back({Segment::kText, text, line});
      break;
    }
    const char kind = s[open + 1];
    size_t inner = open + 2;
    const bool strip_before = inner < s.size() && s[inner] == '-';
    const bool keep_before = inner < s.size() && s[inner] == '+';
    if (strip_before || keep_before) ++inner;
    if (strip_before) {
      while (!text.empty() && IsWhite(text.back())) text.pop_back();
    } else if (!keep_before && (kind == '%' || kind == '#')) {
      // lstrip_blocks: spaces and tabs between the line start and a block / comment tag go.
      size_t blanks = 0;
      while (blanks < open - pos && IsSpaceOrTab(s[open - 1 - blanks])) ++blanks;
      const size_t before = open - blanks;  // where the blanks start in the source
      const bool at_line_start = before == 0 || s[before - 1] == '\n';
      if (at_line_start && before >= pos) text.erase(text.size() - std::min(blanks, text.size()));
    }
    if (!text.empty()) out.push_back({Segment::kText, text, line});
    line += count_lines(s.substr(pos, open - pos));
    const char* close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t end = kind == '#' ? s.find("#}", inner) : FindClose(s, inner, close);
    if (end == std::string::npos) throw ParseError(absl::StrCat("line ", line, ": unclosed tag"));
    std::string body = s.substr(inner, end - inner);
    strip_next = !body.empty() && body.back() == '-';
    if (strip_next || (!body.empty() && body.back() == '+')) body.pop_back();
    trim_newline = kind != '{' && !strip_next;
    if (kind == '{') out.push_back({Segment::kOutput, body, line});
    if (kind == '%') out.push_back({Segment::kStatement, body, line});
    line += count_lines(s.substr(open, end + 2 - open));
    pos = end + 2;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Expression tokens.

struct Token {
  enum Type { kName, kString, kInt, kFloat, kOp, kEnd } type;
  std::string text;
  int64_t i = 0;
  double f = 0;
};

std::vector<Token> Tokenize(const std::string& s, int line) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (IsWhite(c)) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      tokens.push_back({Token::kName, s.substr(i, j - i)});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string digits;
      for (size_t k = i; k < j; ++k) {
        if (s[k] != '_') digits += s[k];
      }
      Token t{is_float ? Token::kFloat : Token::kInt, digits};
      if (is_float) t.f = std::strtod(digits.c_str(), nullptr);
      else t.i = std::strtoll(digits.c_str(), nullptr, 10);
      tokens.push_back(t);
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          switch (e) {
            case 'n': value += '\n'; break;
            case 't': value += '\t'; break;
            case 'r': value += '\r'; break;
            case '\\': value += '\\'; break;
            case '\'': value += '\''; break;
            case '"': value += '"'; break;
            default: value += '\\'; value += e;
          }
        } else {
          value += s[j];
        }
      }
      if (j >= s.size()) throw ParseError(absl::StrCat("line ", line, ": unterminated string"));
      tokens.push_back({Token::kString, value});
      i = j + 1;
      continue;
    }
    static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ".", ",", ":",
                                 "|", "~", "+", "-", "*", "/", "%", "<", ">", "="};
    bool matched = false;
    for (const char* op : kOps) {
      const size_t n = std::char_traits<char>::length(op);
      if (s.compare(i, n, op) == 0) {
        tokens.push_back({Token::kOp, op});
        i += n;
        matched = true;
        break;
      }
    }
    if (!matched) throw ParseError(absl::StrCat("line ", line, ": unexpected character '", std::string(1, c), "'"));
  }
  tokens.push_back({Token::kEnd, ""});
  return tokens;
}

// ---------------------------------------------------------------------------------------------------
// Expression parser (Jinja2's precedence).

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, int line) : t_(std::move(tokens)), line_(line) {}

  ExprPtr Expression(bool with_condexpr = true) {
    ExprPtr e = Or();
    if (with_condexpr && IsName("if")) {
      ++p_;
      auto node = Make(Expr::kCond);
      node->args.push_back(Or());  // condition
      node->children.push_back(e);
      if (IsName("else")) {
        ++p_;
        node->children.push_back(Expression());
      }
      return node;
    }
    return e;
  }
  // A bare tuple `a, b` (for targets / set values) or one expression.
  ExprPtr TupleOrExpression(bool with_condexpr) {
    ExprPtr first = Expression(with_condexpr);
    if (!IsOp(",")) return first;
    auto node = Make(Expr::kList);
    node->children.push_back(first);
    while (IsOp(",")) {
      ++p_;
      if (AtEnd() || IsName("in") || IsOp("=")) break;
      node->children.push_back(Expression(with_condexpr));
    }
    return node;
  }

  bool IsName(const char* name) const { return t_[p_].type == Token::kName && t_[p_].text == name; }
  bool IsOp(const char* op) const { return t_[p_].type == Token::kOp && t_[p_].text == op; }
  bool AtEnd() const { return t_[p_].type == Token::kEnd; }
  std::string TakeName() {
    if (t_[p_].type != Token::kName) Fail("expected a name");
    return t_[p_++].text;
  }
  void Expect(const char* op) {
    if (!IsOp(op)) Fail(absl::StrCat("expected '", op, "'"));
    ++p_;
  }
  void ExpectName(const char* name) {
    if (!IsName(name)) Fail(absl::StrCat("expected '", name, "'"));
    ++p_;
  }
  void ExpectEnd() {
    if (!AtEnd()) Fail(absl::StrCat("unexpected '", t_[p_].text, "'"));
  }
  [[noreturn]] void Fail(const std::string& what) const {
    throw ParseError(absl::StrCat("line ", line_, ": ", what));
  }

 private:
  ExprPtr Make(Expr::Kind kind, std::string name = "") {
    auto e = std::make_shared<Expr>();
    e->kind = kind;
    e->name = std::move(name);
    return e;
  }
  ExprPtr Binary(const std::string& op, ExprPtr a, ExprPtr b) {
    auto e = Make(Expr::kBinary, op);
    e->children = {std::move(a), std::move(b)};
    return e;
  }
  ExprPtr Or() {
    ExprPtr e = And();
    while (IsName("or")) {
      ++p_;
      e = Binary("or", e, And());
    }
    return e;
  }
  ExprPtr And() {
    ExprPtr e = Not();
    while (IsName("and")) {
      ++p_;
      e = Binary("and", e, Not());
    }
    return e;
  }
  ExprPtr Not() {
    if (IsName("not")) {
      ++p_;
      auto e = Make(Expr::kUnary, "not");
      e->children.push_back(Not());
      return e;
    }
    return Compare();
  }
  ExprPtr Compare() {
    ExprPtr e = Math1();
    while (true) {
      if (t_[p_].type == Token::kOp && (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp("<=") || IsOp(">") || IsOp(">="))) {
        const std::string op = t_[p_++].text;
        e = Binary(op, e, Math1());
      } else if (IsName("in")) {
        ++p_;
        e = Binary("in", e, Math1());
      } else if (IsName("not") && t_[p_ + 1].type == Token::kName && t_[p_ + 1].text == "in") {
        p_ += 2;
        e = Binary("not in", e, Math1());
      } else {
        return e;
      }
    }
  }
  ExprPtr Math1() {
    ExprPtr e = Concat();
    while (IsOp("+") || IsOp("-")) {
      const std::string op = t_[p_++].text;
      e = Binary(op, e, Concat());
    }
    return e;
  }
  ExprPtr Concat() {
    ExprPtr e = Math2();
    while (IsOp("~")) {
      ++p_;
      e = Binary("~", e, Math2());
    }
    return e;
  }
  ExprPtr Math2() {
    ExprPtr e = Pow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const std::string op = t_[p_++].text;
      e = Binary(op, e, Pow());
    }
    return e;
  }
  ExprPtr Pow() {
    ExprPtr e = Unary(true);
    while (IsOp("**")) {
      ++p_;
      e = Binary("**", e, Unary(true));
    }
    return e;
  }
  ExprPtr Unary(bool with_filter) {
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      const std::string op = t_[p_++].text;
      e = Make(Expr::kUnary, op);
      e->children.push_back(Unary(false));
    } else {
      e = Postfix(Primary());
    }
    return with_filter ? FilterExpr(e) : e;
  }
  ExprPtr Primary() {
    const Token& t = t_[p_];
    if (t.type == Token::kName) {
      ++p_;
      if (t.text == "true" || t.text == "True") return Literal(true);
      if (t.text == "false" || t.text == "False") return Literal(false);
      if (t.text == "none" || t.text == "None") return Literal(nullptr);
      return Make(Expr::kName, t.text);
    }
    if (t.type == Token::kString) {
      std::string value;
      while (t_[p_].type == Token::kString) value += t_[p_++].text;  // adjacent literals concatenate
      return Literal(value);
    }
    if (t.type == Token::kInt) {
      ++p_;
      return Literal(t.i);
    }
    if (t.type == Token::kFloat) {
      ++p_;
      return Literal(t.f);
    }
    if (IsOp("(")) {
      ++p_;
      if (IsOp(")")) {
        ++p_;
        return Make(Expr::kList);
      }
      ExprPtr e = TupleOrExpression(true);
      Expect(")");
      return e;
    }
    if (IsOp("[")) {
      ++p_;
      auto e = Make(Expr::kList);
      while (!IsOp("]")) {
        e->children.push_back(Expression());
        if (!IsOp(",")) break;
        ++p_;
      }
      Expect("]");
      return e;
    }
    if (IsOp("{")) {
      ++p_;
      auto e = Make(Expr::kDict);
      while (!IsOp("}")) {
        e->args.push_back(Expression());
        Expect(":");
        e->children.push_back(Expression());
        if (!IsOp(",")) break;
        ++p_;
      }
      Expect("}");
      return e;
    }
    Fail(absl::StrCat("unexpected '", t.text, "'"));
  }
  ExprPtr Literal(Json value) {
    auto e = Make(Expr::kLiteral);
    e->literal = std::move(value);
    return e;
  }
  void CallArgs(Expr& e) {
    Expect("(");
    while (!IsOp(")")) {
      if (t_[p_].type == Token::kName && t_[p_ + 1].type == Token::kOp && t_[p_ + 1].text == "=") {
        e.kwarg_names.push_back(t_[p_].text);
        p_ += 2;
        e.kwargs.push_back(Expression());
      } else {
        e.args.push_back(Expression());
      }
      if (!IsOp(",")) break;
      ++p_;
    }
    Expect(")");
  }
  ExprPtr Postfix(ExprPtr e) {
    while (true) {
      if (IsOp(".")) {
        ++p_;
        auto node = Make(Expr::kGetAttr);
        if (t_[p_].type == Token::kInt) {
          node->kind = Expr::kGetItem;
          node->args.push_back(Literal(t_[p_++].i));
        } else {
          node->name = TakeName();
        }
        node->children.push_back(e);
        e = node;
      } else if (IsOp("[")) {
        ++p_;
        auto node = Make(Expr::kGetItem);
        node->children.push_back(e);
        ExprPtr parts[3];
        int colons = 0;
        while (!IsOp("]")) {
          if (IsOp(":")) {
            if (++colons > 2) Fail("bad slice");
            ++p_;
            continue;
          }
          parts[colons] = Expression();
        }
        Expect("]");
        if (colons == 0) {
          if (!parts[0]) Fail("empty subscript");
          node->args.push_back(parts[0]);
        } else {
          node->kind = Expr::kSlice;
          for (auto& part : parts) node->args.push_back(part);  // null = omitted
        }
        e = node;
      } else if (IsOp("(")) {
        auto node = Make(Expr::kCall);
        node->children.push_back(e);
        CallArgs(*node);
        e = node;
      } else {
        return e;
      }
    }
  }
  ExprPtr FilterExpr(ExprPtr e) {
    while (true) {
      if (IsOp("|")) {
        ++p_;
        std::string name = TakeName();
        while (IsOp(".")) {  // dotted filter names do not occur in chat templates; refuse clearly
          Fail(absl::StrCat("unsupported filter '", name, ".'"));
        }
        auto node = Make(Expr::kFilter, name);
        node->children.push_back(e);
        if (IsOp("(")) CallArgs(*node);
        e = node;
      } else if (IsName("is")) {
        ++p_;
        auto node = Make(Expr::kTest);
        if (IsName("not")) {
          ++p_;
          node->negated = true;
        }
        // Tests named like keywords / operators.
        if (t_[p_].type == Token::kName) {
          node->name = TakeName();
        } else if (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp(">") || IsOp("<=") || IsOp(">=")) {
          node->name = t_[p_++].text;
        } else {
          Fail("expected a test name after 'is'");
        }
        node->children.push_back(e);
        if (IsOp("(")) {
          CallArgs(*node);
        } else if (t_[p_].type == Token::kString || t_[p_].type == Token::kInt || t_[p_].type == Token::kFloat ||
                   (t_[p_].type == Token::kName && !IsName("and") && !IsName("or") && !IsName("else") &&
                    !IsName("if") && !IsName("not") && !IsName("in") && !IsName("is"))) {
          node->args.push_back(Postfix(Primary()));
        }
        e = node;
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  int line_;
};

// ---------------------------------------------------------------------------------------------------
// Statements.

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Segment> segments) : segments_(std::move(segments)) {}

  NodePtr Parse() {
    auto root = std::make_shared<Node>();
    root->kind = Node::kBody;
    std::string end;
    ParseBody(*root, {}, &end);
    return root;
  }

 private:
  // Parses into `body` until one of `ends` (returned in *end) or the end of the template.
  void ParseBody(Node& body, const std::vector<std::string>& ends, std::string* end) {
    while (i_ < segments_.size()) {
      const Segment& seg = segments_[i_++];
      if (seg.kind == Segment::kText) {
        auto n = std::make_shared<Node>();
        n->kind = Node::kText;
        n->text = seg.body;
        body.children.push_back(n);
        continue;
      }
      ExprParser p(Tokenize(seg.body, seg.line), seg.line);
      if (seg.kind == Segment::kOutput) {
        auto n = std::make_shared<Node>();
        n->kind = Node::kOutput;
        n->expr = p.Expression();
        p.ExpectEnd();
        body.children.push_back(n);
        continue;
      }
      const std::string keyword = p.TakeName();
      for (const std::string& e : ends) {
        if (keyword == e) {
          *end = keyword;
          last_ = std::move(p);
          return;
        }
      }
      if (keyword == "if") {
        body.children.push_back(ParseIf(p));
      } else if (keyword == "for") {
        body.children.push_back(ParseFor(p, seg.line));
      } else if (keyword == "set") {
        auto n = std::make_shared<Node>();
        n->kind = Node::kSet;
        n->target = p.TakeName();
        if (p.IsOp(".")) {
          p.Expect(".");
          n->attribute = p.TakeName();
        }
        if (!p.IsOp("=")) p.Fail("block assignments ({% set x %}...{% endset %}) are not supported");
        p.Expect("=");
        n->expr = p.TupleOrExpression(true);
        p.ExpectEnd();
        body.children.push_back(n);
      } else if (keyword == "break" || keyword == "continue") {
        auto n = std::make_shared<Node>();
        n->kind = keyword == "break" ? Node::kBreak : Node::kContinue;
        body.children.push_back(n);
      } else if (keyword == "generation") {
        auto n = std::make_shared<Node>();
        n->kind = Node::kBody;
        std::string found;
        ParseBody(*n, {"endgeneration"}, &found);
        if (found.empty()) p.Fail("missing endgeneration");
        body.children.push_back(n);
      } else {
        p.Fail(absl::StrCat("unsupported tag '", keyword, "'"));
      }
    }
    if (!ends.empty()) throw ParseError(absl::StrCat("missing '", ends.back(), "' at the end of the template"));
  }

  NodePtr ParseIf(ExprParser& p) {
    auto n = std::make_shared<Node>();
    n->kind = Node::kIf;
    ExprPtr cond = p.Expression();
    p.ExpectEnd();
    while (true) {
      auto branch = std::make_shared<Node>();
      branch->kind = Node::kBody;
      branch->expr = cond;
      std::string end;
      ParseBody(*branch, {"elif", "else", "endif"}, &end);
      n->children.push_back(branch);
      if (end == "endif") break;
      if (end == "elif") {
        cond = last_->Expression();
        last_->ExpectEnd();
        continue;
      }
      auto other = std::make_shared<Node>();
      other->kind = Node::kBody;
      ParseBody(*other, {"endif"}, &end);
      n->else_body = other;
      break;
    }
    return n;
  }

  NodePtr ParseFor(ExprParser& p, int line) {
    auto n = std::make_shared<Node>();
    n->kind = Node::kFor;
    n->targets.push_back(p.TakeName());
    while (p.IsOp(",")) {
      p.Expect(",");
      n->targets.push_back(p.TakeName());
    }
    p.ExpectName("in");
    n->expr = p.TupleOrExpression(false);
    if (p.IsName("if")) {
      p.ExpectName("if");
      n->filter = p.Expression(false);
    }
    if (p.IsName("recursive")) p.Fail("recursive loops are not supported");
    p.ExpectEnd();
    auto body = std::make_shared<Node>();
    body->kind = Node::kBody;
    std::string end;
    ParseBody(*body, {"else", "endfor"}, &end);
    n->children.push_back(body);
    if (end == "else") {
      auto other = std::make_shared<Node>();
      other->kind = Node::kBody;
      ParseBody(*other, {"endfor"}, &end);
      n->else_body = other;
    }
    (void)line;
    return n;
  }

  std::vector<Segment> segments_;
  size_t i_ = 0;
  std::optional<ExprParser> last_;  // the parser of the tag that ended the last body (elif's condition)
};

}  // namespace

NodePtr ParseTemplate(const std::string& source) { return TemplateParser(Split(source)).Parse(); }

}  // namespace squeezeserve::jinja
