#include "cli/spec_yaml.h"

// yaml-cpp 0.7's node templates trip GCC 12's -Wdangling-pointer (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#include <yaml-cpp/yaml.h>
#pragma GCC diagnostic pop

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/spec_names.h"

namespace forge::cli {
namespace {

namespace pb = google::protobuf;
using pb::FieldDescriptor;

// Past this many problems the rest of the document is not examined: a person fixes the first
// ones first, and a hostile document cannot make the report grow without bound.
constexpr size_t kMaxProblems = 20;
// Text from the document echoed back in a message is cut to this many bytes.
constexpr size_t kMaxEcho = 64;

std::string Echo(absl::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxEcho)),
                      text.size() > kMaxEcho ? "..." : "", "\"");
}

// What a node is, for "expected X, got Y" messages.
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return node.Tag() == "?" ? Echo(node.Scalar())
                               : absl::StrCat("the quoted string ", Echo(node.Scalar()));
    default:
      return "no value";
  }
}

// A plain scalar is one written without quotes or an explicit tag; only those can be numbers.
bool IsPlainScalar(const YAML::Node& node) { return node.IsScalar() && node.Tag() == "?"; }

std::string FieldPath(absl::string_view parent, absl::string_view name) {
  return parent.empty() ? std::string(name) : absl::StrCat(parent, ".", name);
}

std::string AllowedKeys(const pb::Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return absl::StrJoin(names, ", ");
}

bool IsAllDigits(absl::string_view text) {
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) text.remove_prefix(1);
  if (text.empty()) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(c)) return false;
  }
  return true;
}

// The integer in `node`, within [min, max]. The message does not name the field.
absl::StatusOr<int64_t> ParseInt(const YAML::Node& node, int64_t min, int64_t max) {
  const std::string& text = node.Scalar();
  const std::string range = absl::StrCat("an integer from ", min, " to ", max);
  if (!IsPlainScalar(node)) {
    return absl::InvalidArgumentError(absl::StrCat("expected an integer, got ", Describe(node)));
  }
  int64_t value = 0;
  if (absl::SimpleAtoi(text, &value)) {
    if (value < min || value > max) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected ", range, ", got ", text, " (out of range)"));
    }
    return value;
  }
  if (IsAllDigits(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", range, ", got ", Echo(text), " (out of range)"));
  }
  return absl::InvalidArgumentError(absl::StrCat("expected an integer, got ", Describe(node)));
}

absl::StatusOr<uint64_t> ParseUint64(const YAML::Node& node) {
  uint64_t value = 0;
  if (IsPlainScalar(node) && absl::SimpleAtoi(node.Scalar(), &value)) return value;
  if (IsPlainScalar(node) && IsAllDigits(node.Scalar()) && node.Scalar()[0] != '-') {
    return absl::InvalidArgumentError(absl::StrCat("expected an integer from 0 to ",
                                                   std::numeric_limits<uint64_t>::max(), ", got ",
                                                   Echo(node.Scalar()), " (out of range)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("expected a non-negative integer, got ", Describe(node)));
}

absl::StatusOr<double> ParseDouble(const YAML::Node& node) {
  double value = 0;
  if (IsPlainScalar(node) && absl::SimpleAtod(node.Scalar(), &value)) return value;
  return absl::InvalidArgumentError(absl::StrCat("expected a number, got ", Describe(node)));
}

absl::StatusOr<bool> ParseBool(const YAML::Node& node) {
  if (IsPlainScalar(node)) {
    const std::string lower = absl::AsciiStrToLower(node.Scalar());
    if (lower == "true") return true;
    if (lower == "false") return false;
  }
  return absl::InvalidArgumentError(absl::StrCat("expected true or false, got ", Describe(node)));
}

// The enum number for a YAML spelling; the spellings live in common/spec_names.h.
absl::StatusOr<int> ParseEnum(const pb::EnumDescriptor* type, const std::string& text) {
  if (type == forge::v1::Stage_descriptor()) return ParseStage(text);
  if (type == forge::v1::DeviceKind_descriptor()) return ParseDeviceKind(text);
  if (type == forge::v1::LrDecay_descriptor()) return ParseLrDecay(text);
  return absl::InternalError(absl::StrCat("the CLI has no YAML spellings for enum ",
                                          type->full_name(), "; add them to spec_names.h"));
}

// Walks a YAML tree alongside a message descriptor, filling the message through reflection
// and collecting every problem. Owned by one thread.
class SpecParser {
 public:
  explicit SpecParser(absl::string_view filename) : filename_(filename) {}

  // REQUIRES: node is a map.
  void ParseMessage(const YAML::Node& node, const std::string& path, pb::Message* msg);

  void Problem(const YAML::Mark& mark, absl::string_view text) {
    if (problems_.size() == kMaxProblems) {
      problems_.push_back(absl::StrCat(filename_, ": too many problems; fix these first"));
    }
    if (Full()) return;
    problems_.push_back(
        absl::StrCat(filename_, ":", mark.line + 1, ":", mark.column + 1, ": ", text));
  }
  bool Full() const { return problems_.size() > kMaxProblems; }
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  // One `key: value` of a message. `key_mark` locates a value that is null.
  void ParseField(const YAML::Node& value, const YAML::Mark& key_mark, const std::string& path,
                  const FieldDescriptor* field, pb::Message* msg);
  // One scalar of `field`: set, or appended when the field is repeated.
  void ParseScalar(const YAML::Node& value, const YAML::Mark& mark, const std::string& path,
                   const FieldDescriptor* field, pb::Message* msg);
  void ParseMapField(const YAML::Node& value, const std::string& path, const FieldDescriptor* field,
                     pb::Message* msg);
  // Reports a duplicate and returns false when `key` was seen before in this map.
  bool CheckNotDuplicate(const YAML::Node& key, const std::string& where,
                         std::map<std::string, YAML::Mark>* seen);

  const std::string filename_;
  std::vector<std::string> problems_;
};

bool SpecParser::CheckNotDuplicate(const YAML::Node& key, const std::string& where,
                                   std::map<std::string, YAML::Mark>* seen) {
  auto [it, inserted] = seen->emplace(key.Scalar(), key.Mark());
  if (inserted) return true;
  Problem(key.Mark(), absl::StrCat("duplicate key ", Echo(key.Scalar()), " ", where, " (first at ",
                                   it->second.line + 1, ":", it->second.column + 1, ")"));
  return false;
}

void SpecParser::ParseMessage(const YAML::Node& node, const std::string& path, pb::Message* msg) {
  const pb::Descriptor* descriptor = msg->GetDescriptor();
  const std::string where = path.empty() ? "at top level" : absl::StrCat("in ", path);
  std::map<std::string, YAML::Mark> seen;
  for (auto it = node.begin(); it != node.end() && !Full(); ++it) {
    const YAML::Node& key = it->first;
    if (!key.IsScalar()) {
      Problem(key.Mark(), absl::StrCat("a key ", where, " must be a name, got ", Describe(key)));
      continue;
    }
    if (!CheckNotDuplicate(key, where, &seen)) continue;
    const FieldDescriptor* field = descriptor->FindFieldByName(key.Scalar());
    if (field == nullptr) {
      Problem(key.Mark(), absl::StrCat("unknown key ", Echo(key.Scalar()), " ", where,
                                       "; allowed: ", AllowedKeys(descriptor)));
      continue;
    }
    ParseField(it->second, key.Mark(), FieldPath(path, field->name()), field, msg);
  }
}

void SpecParser::ParseField(const YAML::Node& value, const YAML::Mark& key_mark,
                            const std::string& path, const FieldDescriptor* field,
                            pb::Message* msg) {
  if (!value.IsDefined() || value.IsNull()) {
    Problem(key_mark, absl::StrCat(path, ": no value given; give one or remove the key"));
    return;
  }
  if (field->is_map()) {
    ParseMapField(value, path, field, msg);
    return;
  }
  const bool is_message = field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
  if (field->is_repeated()) {
    if (!value.IsSequence()) {
      Problem(value.Mark(), absl::StrCat(path, ": expected a list, got ", Describe(value)));
      return;
    }
    for (size_t i = 0; i < value.size() && !Full(); ++i) {
      const YAML::Node element = value[i];
      const std::string element_path = absl::StrCat(path, "[", i, "]");
      if (!is_message) {
        ParseScalar(element, element.Mark(), element_path, field, msg);
      } else if (!element.IsMap()) {
        Problem(element.Mark(), absl::StrCat(element_path, ": expected a map (key: value), got ",
                                             Describe(element)));
      } else {
        ParseMessage(element, element_path, msg->GetReflection()->AddMessage(msg, field));
      }
    }
    return;
  }
  if (!is_message) {
    ParseScalar(value, value.Mark(), path, field, msg);
  } else if (!value.IsMap()) {
    Problem(value.Mark(),
            absl::StrCat(path, ": expected a map (key: value), got ", Describe(value)));
  } else {
    ParseMessage(value, path, msg->GetReflection()->MutableMessage(msg, field));
  }
}

void SpecParser::ParseMapField(const YAML::Node& value, const std::string& path,
                               const FieldDescriptor* field, pb::Message* msg) {
  if (!value.IsMap()) {
    Problem(value.Mark(),
            absl::StrCat(path, ": expected a map (key: value), got ", Describe(value)));
    return;
  }
  const FieldDescriptor* key_field = field->message_type()->map_key();
  const FieldDescriptor* value_field = field->message_type()->map_value();
  const std::string where = absl::StrCat("in ", path);
  std::map<std::string, YAML::Mark> seen;
  for (auto it = value.begin(); it != value.end() && !Full(); ++it) {
    const YAML::Node& key = it->first;
    if (!key.IsScalar()) {
      Problem(key.Mark(), absl::StrCat("a key ", where, " must be a scalar, got ", Describe(key)));
      continue;
    }
    if (!CheckNotDuplicate(key, where, &seen)) continue;
    pb::Message* entry = msg->GetReflection()->AddMessage(msg, field);
    const std::string entry_path = FieldPath(path, key.Scalar());
    ParseScalar(key, key.Mark(), absl::StrCat(path, " key ", Echo(key.Scalar())), key_field, entry);
    ParseField(it->second, key.Mark(), entry_path, value_field, entry);
  }
}

void SpecParser::ParseScalar(const YAML::Node& value, const YAML::Mark& mark,
                             const std::string& path, const FieldDescriptor* field,
                             pb::Message* msg) {
  if (!value.IsDefined() || value.IsNull()) {
    Problem(mark, absl::StrCat(path, ": no value given"));
    return;
  }
  if (!value.IsScalar()) {
    const char* expected = field->cpp_type() == FieldDescriptor::CPPTYPE_STRING ? "a string"
                           : field->cpp_type() == FieldDescriptor::CPPTYPE_ENUM ? "a name"
                                                                                : "a number";
    Problem(value.Mark(), absl::StrCat(path, ": expected ", expected, ", got ", Describe(value)));
    return;
  }
  const pb::Reflection* r = msg->GetReflection();
  const bool rep = field->is_repeated();
  absl::Status status;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      auto v =
          ParseInt(value, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
      status = v.status();
      if (v.ok()) rep ? r->AddInt32(msg, field, *v) : r->SetInt32(msg, field, *v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      auto v =
          ParseInt(value, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
      status = v.status();
      if (v.ok()) rep ? r->AddInt64(msg, field, *v) : r->SetInt64(msg, field, *v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      auto v = ParseInt(value, 0, std::numeric_limits<uint32_t>::max());
      status = v.status();
      if (v.ok()) {
        const auto u = static_cast<uint32_t>(*v);
        rep ? r->AddUInt32(msg, field, u) : r->SetUInt32(msg, field, u);
      }
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      auto v = ParseUint64(value);
      status = v.status();
      if (v.ok()) rep ? r->AddUInt64(msg, field, *v) : r->SetUInt64(msg, field, *v);
      break;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      auto v = ParseDouble(value);
      status = v.status();
      if (v.ok()) rep ? r->AddDouble(msg, field, *v) : r->SetDouble(msg, field, *v);
      break;
    }
    case FieldDescriptor::CPPTYPE_FLOAT: {
      auto v = ParseDouble(value);
      status = v.status();
      if (v.ok()) {
        const auto f = static_cast<float>(*v);
        rep ? r->AddFloat(msg, field, f) : r->SetFloat(msg, field, f);
      }
      break;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      auto v = ParseBool(value);
      status = v.status();
      if (v.ok()) rep ? r->AddBool(msg, field, *v) : r->SetBool(msg, field, *v);
      break;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      auto v = ParseEnum(field->enum_type(), value.Scalar());
      status = v.status();
      if (v.ok()) rep ? r->AddEnumValue(msg, field, *v) : r->SetEnumValue(msg, field, *v);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING:
      rep ? r->AddString(msg, field, value.Scalar()) : r->SetString(msg, field, value.Scalar());
      break;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      status = absl::InternalError("a message where a scalar was expected");
      break;
  }
  if (!status.ok()) Problem(value.Mark(), absl::StrCat(path, ": ", status.message()));
}

}  // namespace

absl::StatusOr<forge::v1::JobSpec> ParseJobSpecYaml(absl::string_view yaml_text,
                                                    absl::string_view filename) {
  SpecParser parser(filename);
  forge::v1::JobSpec spec;
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(std::string(yaml_text));
    if (docs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(filename, ": the job spec is empty"));
    }
    if (docs.size() > 1) {
      parser.Problem(docs[1].Mark(), absl::StrCat("a job spec is one YAML document, found ",
                                                  docs.size(), "; remove the \"---\" separators"));
    } else if (!docs[0].IsMap()) {
      parser.Problem(docs[0].Mark(),
                     absl::StrCat("a job spec is a map (key: value), got ", Describe(docs[0])));
    } else {
      parser.ParseMessage(docs[0], "", &spec);
    }
  } catch (const YAML::ParserException& e) {
    parser.Problem(e.mark, absl::StrCat("YAML syntax error: ", e.msg));
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) {
      return absl::InvalidArgumentError(absl::StrCat(filename, ": cannot read YAML: ", e.msg));
    }
    parser.Problem(e.mark, absl::StrCat("cannot read YAML: ", e.msg));
  }
  if (!parser.problems().empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(parser.problems(), "\n"));
  }
  return spec;
}

}  // namespace forge::cli
