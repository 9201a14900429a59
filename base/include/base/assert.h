// Invariant checks. Input errors are never assertions: they are absl::Status values.
// GPULEDGER_ASSERT guards ledger invariants (chain continuity, list = co-pay + subsidy,
// offsets only move forward) and stays on in every build: a broken invariant in a ledger of
// public money must stop the process rather than write a wrong record.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace gpuledger::base {
[[noreturn]] inline void AssertFail(const char* expr, const char* msg, const char* file, int line) {
  std::fprintf(stderr, "gpuledger: invariant violated at %s:%d: %s (%s)\n", file, line, msg, expr);
  std::abort();
}
}  // namespace gpuledger::base

#define GPULEDGER_ASSERT(cond, msg) \
  ((cond) ? (void)0 : ::gpuledger::base::AssertFail(#cond, msg, __FILE__, __LINE__))

#ifdef NDEBUG
#define GPULEDGER_DASSERT(cond, msg) ((void)0)
#else
#define GPULEDGER_DASSERT(cond, msg) GPULEDGER_ASSERT(cond, msg)
#endif
