// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status and absl::StatusOr (Abseil 20220623
// ships neither).
#ifndef FORGE_COMMON_STATUS_MACROS_H_
#define FORGE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FORGE_STATUS_CONCAT_INNER_(a, b) a##b
#define FORGE_STATUS_CONCAT_(a, b) FORGE_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if not OK.
#define RETURN_IF_ERROR(expr)                   \
  do {                                          \
    ::absl::Status _forge_status = (expr);      \
    if (!_forge_status.ok()) return _forge_status; \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>); on error returns its
// status, otherwise moves the value into `lhs` (which may be a declaration: `auto x`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  FORGE_ASSIGN_OR_RETURN_IMPL_(FORGE_STATUS_CONCAT_(_forge_statusor_, __LINE__), lhs, expr)

#define FORGE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // FORGE_COMMON_STATUS_MACROS_H_
