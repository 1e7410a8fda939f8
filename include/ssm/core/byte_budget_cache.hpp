#pragma once
/// \file byte_budget_cache.hpp
/// A thread-safe, least-recently-used cache of immutable values with a byte budget.
///
/// The library keeps derived data that is expensive to make and reused across calls: kernel spectra
/// per input length (`SpectrumCache`, core/spectrum_cache.hpp) and FFTW plans per size (fft.hpp).
/// Kept forever, they grow with every new length a program sees; `ByteBudgetCache` bounds them.
///
/// Semantics:
/// - Values are handed out as `std::shared_ptr<const Value>`. Evicting or clearing drops only the
///   cache's reference: a value in use by a caller stays alive until that caller releases it, so
///   `bytes()` counts what the cache holds, not what is still referenced elsewhere.
/// - Each entry's size is measured once, when it is inserted, by `SizeOf{}(value)` (by default the
///   value's own `bytes()` member). After every insertion the least recently used entries are evicted
///   until `bytes() <= budget()`; the entry just inserted is never evicted by its own insertion unless
///   it alone exceeds the budget, in which case it is returned to the caller but not kept.
/// - `get_or_make(key, make)` runs `make` outside the lock (it may take long, and may itself use other
///   caches). Two threads racing on a missing key may both run `make`; the first to finish inserts its
///   value, and both return that one (the other result is discarded). If `make` throws, nothing is
///   inserted and the exception propagates.
/// - Destructors of evicted values run after the lock is released, so a value whose destructor takes
///   another lock (an FFTW plan takes the planner lock) cannot deadlock against the cache.
/// All member functions are thread-safe. The cache is neither copyable nor movable (it owns a mutex):
/// hold it by value in one place, or through a `std::shared_ptr` when several owners share it.

#include <cstddef>
#include <iterator>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

namespace ssm {

/// The default size measure of a cached value: its `bytes()` member (heap memory it holds, in bytes).
struct MemberBytes {
  template <class Value>
  std::size_t operator()(const Value& value) const {
    return static_cast<std::size_t>(value.bytes());
  }
};

/// A map `Key -> shared_ptr<const Value>` of at most `budget()` bytes, evicting the least recently used
/// entries (see the file comment for the exact semantics). `Key` needs `operator<`; `SizeOf` is a
/// default-constructible functor `std::size_t(const Value&)` returning the bytes an entry holds.
template <class Key, class Value, class SizeOf = MemberBytes>
class ByteBudgetCache {
 public:
  using key_type = Key;
  using value_type = Value;
  using pointer = std::shared_ptr<const Value>;

  /// 256 MiB: room for several spectra of a large layer (one spectrum of an H = 256, L = 16384 float
  /// layer is 33.5 MB) without letting a program that sees many lengths grow without bound.
  static constexpr std::size_t default_budget = std::size_t(256) << 20;

  /// An empty cache holding at most `budget` bytes (0: nothing is kept, every lookup makes anew).
  explicit ByteBudgetCache(std::size_t budget = default_budget) : budget_(budget) {}
  ByteBudgetCache(const ByteBudgetCache&) = delete;
  ByteBudgetCache& operator=(const ByteBudgetCache&) = delete;

  /// The value for `key`: the cached one (now the most recently used), or else `make()`'s result,
  /// inserted subject to the budget. `make` is called without the lock held and returns a `Value`
  /// (moved into a new shared_ptr) or a `std::shared_ptr<const Value>` / `std::shared_ptr<Value>`.
  /// Racing callers for one missing key all return the same value (the first inserted).
  template <class Make>
  pointer get_or_make(const Key& key, Make&& make) {
    if (pointer hit = find(key)) return hit;
    pointer made = make_pointer(std::forward<Make>(make)());
    return insert(key, std::move(made));
  }

  /// The cached value for `key` (now the most recently used), or nullptr.
  pointer find(const Key& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);  // most recently used first
    return it->second->value;
  }

  /// Inserts `value` for `key` unless the key is present, and returns the value now associated with
  /// it (the existing one if there was one). Evicts least recently used entries to respect the budget.
  /// A null `value` is returned as is and not inserted.
  pointer insert(const Key& key, pointer value) {
    if (!value) return value;
    const std::size_t size = SizeOf{}(*value);
    std::list<Entry> evicted;  // destroyed after the lock is released
    pointer result;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = index_.find(key);
      if (it != index_.end()) {
        order_.splice(order_.begin(), order_, it->second);
        return it->second->value;
      }
      result = value;
      if (size <= budget_) {
        order_.push_front(Entry{key, std::move(value), size});
        try {
          index_.emplace(key, order_.begin());
        } catch (...) {
          order_.pop_front();  // keep the list and the index consistent if the index cannot grow
          throw;
        }
        bytes_ += size;
        evict_to(budget_, evicted);
      }
    }
    return result;
  }

  /// Drops every entry (values still referenced elsewhere stay alive with their users).
  void clear() {
    std::list<Entry> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      dropped.swap(order_);
      index_.clear();
      bytes_ = 0;
    }
  }

  /// Drops the entry for `key`, if any. Returns whether there was one.
  bool erase(const Key& key) {
    pointer dropped;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    dropped = std::move(it->second->value);  // destroyed after the lock (declared before it)
    bytes_ -= it->second->bytes;
    order_.erase(it->second);
    index_.erase(it);
    return true;
  }

  /// Sets the byte budget and evicts least recently used entries until the cache fits.
  void set_budget(std::size_t budget) {
    std::list<Entry> evicted;
    std::lock_guard<std::mutex> lock(mutex_);
    budget_ = budget;
    evict_to(budget_, evicted);
  }

  /// The byte budget.
  std::size_t budget() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return budget_;
  }

  /// Bytes held by the cached entries (the sum of their sizes as measured at insertion).
  std::size_t bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return bytes_;
  }

  /// Number of cached entries.
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return index_.size();
  }

  /// Whether `key` is cached (does not count as a use).
  bool contains(const Key& key) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return index_.count(key) != 0;
  }

  /// The cached keys, most recently used first (a snapshot, for diagnostics and tests).
  std::vector<Key> keys() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<Key> out;
    out.reserve(order_.size());
    for (const Entry& e : order_) out.push_back(e.key);
    return out;
  }

 private:
  struct Entry {
    Key key;
    pointer value;
    std::size_t bytes;
  };

  template <class Made>
  static pointer make_pointer(Made&& made) {
    using M = std::decay_t<Made>;
    if constexpr (std::is_same_v<M, std::shared_ptr<const Value>> || std::is_same_v<M, std::shared_ptr<Value>>) {
      return pointer(std::forward<Made>(made));
    } else {
      static_assert(std::is_convertible_v<Made&&, Value>,
                    "ByteBudgetCache::get_or_make: make() must return a Value or a shared_ptr to one");
      return std::make_shared<const Value>(std::forward<Made>(made));
    }
  }

  /// Moves the least recently used entries into `evicted` until bytes_ <= limit (call with the lock
  /// held; the caller declares `evicted` before its lock_guard, so the values die after unlocking).
  /// Splicing list nodes allocates nothing, so eviction cannot throw.
  void evict_to(std::size_t limit, std::list<Entry>& evicted) noexcept {
    while (bytes_ > limit && !order_.empty()) {
      const auto last = std::prev(order_.end());
      bytes_ -= last->bytes;
      index_.erase(last->key);
      evicted.splice(evicted.begin(), order_, last);
    }
  }

  mutable std::mutex mutex_;
  std::list<Entry> order_;  // most recently used first
  std::map<Key, typename std::list<Entry>::iterator> index_;
  std::size_t bytes_ = 0;
  std::size_t budget_;
};

}  // namespace ssm
