// Error handling conventions: expected failures are absl::Status / absl::StatusOr values.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define GPULEDGER_CONCAT_INNER_(a, b) a##b
#define GPULEDGER_CONCAT_(a, b) GPULEDGER_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define GPULEDGER_RETURN_IF_ERROR(expr)                    \
  do {                                                     \
    ::absl::Status gpuledger_status_ = (expr);             \
    if (!gpuledger_status_.ok()) return gpuledger_status_; \
  } while (0)

// `lhs = value of expr` if expr (an absl::StatusOr) is OK; otherwise returns its status.
#define GPULEDGER_ASSIGN_OR_RETURN(lhs, expr) \
  GPULEDGER_ASSIGN_OR_RETURN_IMPL_(GPULEDGER_CONCAT_(gpuledger_statusor_, __LINE__), lhs, expr)
#define GPULEDGER_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  if (!tmp.ok()) return tmp.status();                    \
  lhs = std::move(tmp).value()
