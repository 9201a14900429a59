// clock_shift: an LD_PRELOAD library that moves one process's wall clock (issue 8, item 6:
// "the ingest host's clock stepped an hour either way"), without touching the machine's clock
// or the broker's.
//
//   GPULEDGER_CLOCK_OFFSET_S   seconds added to the wall clock from the start (may be negative)
//   GPULEDGER_CLOCK_STEP_S     seconds added on top, from GPULEDGER_CLOCK_STEP_AT_MS
//   GPULEDGER_CLOCK_STEP_AT_MS milliseconds (of the monotonic clock) after the library loads
//
// What moves: clock_gettime(CLOCK_REALTIME and its _COARSE variant), gettimeofday and time —
// what std::chrono::system_clock, spdlog and RocksDB read. The monotonic clocks do not move (they
// do not when an NTP step or an operator moves a host's clock either).
//
// Why libfaketime would not do: it also fakes the clocks that librdkafka's condition-variable
// deadlines are computed from and waited on inconsistently, and the consumer hung. Here the
// deadlines stay consistent: a pthread_cond_timedwait deadline near the moved clock (computed
// from the clocks above) is moved back to the real clock before the kernel sees it; one near the
// real clock (librdkafka computes its deadlines with timespec_get, which glibc answers itself)
// or on the monotonic clock is left alone.
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include <cstdint>

namespace {

constexpr int64_t kNsPerS = 1'000'000'000;

int64_t EnvInt(const char* name) {
  const char* v = getenv(name);
  return v != nullptr ? strtoll(v, nullptr, 10) : 0;
}

template <typename F>
F Real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

using ClockGettime = int (*)(clockid_t, struct timespec*);

ClockGettime RealClockGettime() {
  static ClockGettime real = Real<ClockGettime>("clock_gettime");
  return real;
}

int64_t MonotonicNs() {
  struct timespec ts;
  RealClockGettime()(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * kNsPerS + ts.tv_nsec;
}

struct Shift {
  int64_t offset_ns = EnvInt("GPULEDGER_CLOCK_OFFSET_S") * kNsPerS;
  int64_t step_ns = EnvInt("GPULEDGER_CLOCK_STEP_S") * kNsPerS;
  int64_t step_at_ns = MonotonicNs() + EnvInt("GPULEDGER_CLOCK_STEP_AT_MS") * 1'000'000;
};

const Shift& TheShift() {
  static const Shift shift;
  return shift;
}

// How far the wall clock is moved now.
int64_t OffsetNs() {
  const Shift& s = TheShift();
  return s.offset_ns + (s.step_ns != 0 && MonotonicNs() >= s.step_at_ns ? s.step_ns : 0);
}

void Add(struct timespec* ts, int64_t ns) {
  int64_t total = ts->tv_sec * kNsPerS + ts->tv_nsec + ns;
  ts->tv_sec = static_cast<time_t>(total / kNsPerS);
  ts->tv_nsec = static_cast<long>(total % kNsPerS);
  if (ts->tv_nsec < 0) {
    ts->tv_nsec += kNsPerS;
    --ts->tv_sec;
  }
}

int64_t AbsNs(int64_t v) { return v < 0 ? -v : v; }

}  // namespace

extern "C" {

int clock_gettime(clockid_t clock, struct timespec* ts) {
  const int r = RealClockGettime()(clock, ts);
  if (r == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) Add(ts, OffsetNs());
  return r;
}

int gettimeofday(struct timeval* tv, void* tz) {
  struct timespec ts;
  RealClockGettime()(CLOCK_REALTIME, &ts);
  Add(&ts, OffsetNs());
  // glibc declares tv nonnull.
  tv->tv_sec = ts.tv_sec;
  tv->tv_usec = ts.tv_nsec / 1'000;
  (void)tz;
  return 0;
}

time_t time(time_t* out) {
  struct timespec ts;
  RealClockGettime()(CLOCK_REALTIME, &ts);
  Add(&ts, OffsetNs());
  if (out != nullptr) *out = ts.tv_sec;
  return ts.tv_sec;
}

int pthread_cond_timedwait(pthread_cond_t* cond, pthread_mutex_t* mutex,
                           const struct timespec* deadline) {
  using Fn = int (*)(pthread_cond_t*, pthread_mutex_t*, const struct timespec*);
  static Fn real = reinterpret_cast<Fn>(dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2"));
  const int64_t offset = OffsetNs();
  if (offset != 0) {  // glibc declares deadline nonnull
    struct timespec now;
    RealClockGettime()(CLOCK_REALTIME, &now);
    const int64_t d = deadline->tv_sec * kNsPerS + deadline->tv_nsec;
    const int64_t real_now = now.tv_sec * kNsPerS + now.tv_nsec;
    if (AbsNs(d - (real_now + offset)) < AbsNs(d - real_now)) {
      struct timespec moved = *deadline;
      Add(&moved, -offset);
      return real(cond, mutex, &moved);
    }
  }
  return real(cond, mutex, deadline);
}

}  // extern "C"
