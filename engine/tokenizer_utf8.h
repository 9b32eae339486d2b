// UTF-8 helpers shared by the tokenizer.json pipeline (tokenizer_json*.cc). Plain C++.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace squeezeserve::utf8 {

// Replaces every maximal invalid subsequence with U+FFFD, exactly as Rust's String::from_utf8_lossy
// (which HF tokenizers' decoders use), so decoded text matches theirs byte for byte.
std::string Lossy(std::string_view bytes);
bool IsValid(std::string_view bytes);

// Length in bytes of the (valid) UTF-8 character starting with `lead`.
inline int CharLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  return 4;
}
// Decodes the (valid) character at text[i] and advances i past it.
char32_t Next(std::string_view text, size_t& i);
void Append(std::string& out, char32_t c);

}  // namespace squeezeserve::utf8
