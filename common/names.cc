#include "common/names.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"

namespace forge {
namespace {

absl::Status Check(absl::string_view field, absl::string_view value, size_t max_len,
                   bool lower_only, absl::string_view extra, bool letter_first,
                   absl::string_view charset_desc) {
  if (value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is required (", charset_desc, ")"));
  }
  if (value.size() > max_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is %d characters long; the limit is %d", field, value.size(), max_len));
  }
  unsigned char first = static_cast<unsigned char>(value[0]);
  bool first_ok = letter_first ? absl::ascii_islower(first) || (!lower_only && absl::ascii_isupper(first))
                               : absl::ascii_isalnum(first) && !(lower_only && absl::ascii_isupper(first));
  if (!first_ok) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s must start with a %s (got \"%s\")", field,
        letter_first ? "letter" : "letter or digit", absl::CHexEscape(value)));
  }
  for (char c : value) {
    unsigned char u = static_cast<unsigned char>(c);
    bool ok = absl::ascii_isdigit(u) || absl::ascii_islower(u) ||
              (!lower_only && absl::ascii_isupper(u)) || extra.find(c) != absl::string_view::npos;
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s may contain only %s (got \"%s\")", field, charset_desc, absl::CHexEscape(value)));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTenantName(absl::string_view field, absl::string_view name) {
  return Check(field, name, 64, /*lower_only=*/true, "-", /*letter_first=*/true,
               "lower-case letters, digits and '-', starting with a letter");
}

absl::Status ValidateResourceName(absl::string_view field, absl::string_view name) {
  return Check(field, name, 64, /*lower_only=*/true, "._-", /*letter_first=*/false,
               "lower-case letters, digits, '.', '_' and '-'");
}

absl::Status ValidateIdentifier(absl::string_view field, absl::string_view id, size_t max_len) {
  return Check(field, id, max_len, /*lower_only=*/false, "._-", /*letter_first=*/false,
               "letters, digits, '.', '_' and '-'");
}

}  // namespace forge
