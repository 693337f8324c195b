// base/maybe_lock.h
//
// OptionalMutex is an absl::Mutex that its owner switches on or off once, at
// construction: a pool shared by several threads locks it, a pool that one
// thread owns pays nothing. MaybeLock is its scoped lock. Every mutex user in
// pagedkv takes them from here, so the two things they get right are in one
// place:
//   - clang's thread-safety analysis sees the lock (ABSL_GUARDED_BY members
//     of the owner are checked against MaybeLock scopes);
//   - ThreadSanitizer sees the happens-before edges. Debian's Abseil is not
//     built with -fsanitize=thread, so TSan cannot see absl::Mutex's own
//     synchronisation and reports false races on everything it guards; under
//     TSan, Lock() and Unlock() state the edges with __tsan_acquire and
//     __tsan_release.
//
//   class Counter {
//    public:
//     explicit Counter(bool shared) : mu_(shared) {}
//     void Add() {
//       MaybeLock lock(&mu_);
//       ++count_;
//     }
//
//    private:
//     OptionalMutex mu_;
//     int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
//   };
//
// Thread safety: with `enabled`, an OptionalMutex is a mutex; without, the
// owner promises that one thread at a time uses what it guards.
#ifndef PAGEDKV_BASE_MAYBE_LOCK_H_
#define PAGEDKV_BASE_MAYBE_LOCK_H_

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER      // gcc and clang spellings.
#include <sanitizer/tsan_interface.h>  // NOLINT(build/include_order)
#endif

namespace pagedkv {

class ABSL_LOCKABLE OptionalMutex {
 public:
  explicit OptionalMutex(bool enabled) : enabled_(enabled) {}
  OptionalMutex(const OptionalMutex&) = delete;
  OptionalMutex& operator=(const OptionalMutex&) = delete;

  bool enabled() const { return enabled_; }

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    if (!enabled_) return;
    mu_.Lock();
#ifdef ABSL_HAVE_THREAD_SANITIZER
    __tsan_acquire(&mu_);
#endif
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    if (!enabled_) return;
#ifdef ABSL_HAVE_THREAD_SANITIZER
    __tsan_release(&mu_);
#endif
    mu_.Unlock();
  }

 private:
  const bool enabled_;
  absl::Mutex mu_;
};

// Holds an OptionalMutex for its scope.
class ABSL_SCOPED_LOCKABLE MaybeLock {
 public:
  explicit MaybeLock(OptionalMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : mu_(mu) {
    mu_->Lock();
  }
  ~MaybeLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MaybeLock(const MaybeLock&) = delete;
  MaybeLock& operator=(const MaybeLock&) = delete;

 private:
  OptionalMutex* const mu_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_BASE_MAYBE_LOCK_H_
