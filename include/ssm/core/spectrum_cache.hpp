#pragma once
/// \file spectrum_cache.hpp
/// The per-input-length cache of kernel spectra that the convolutional layers (S4, S4D, LRU) keep.
///
/// A layer's convolution mode needs, for each input length L it sees, the padded spectrum of its
/// kernels (`KernelSpectrum`): (n/2 + 1) x K complex values with n = fft::fast_size(L + Lk - 1), K the
/// number of kernels (H channels for S4 / S4D, 2N mode kernels for the LRU). In bytes, per entry:
///
///     bytes = (n/2 + 1) * K * 2 * sizeof(T)     (+ a few dozen bytes of bookkeeping)
///
/// e.g. H = 256, L = 16384, float: n = 32768, 16385 x 256 x 8 B = 33.5 MB. Making one costs a kernel
/// evaluation plus K real FFTs, so the cache is worth keeping, but not for every length ever seen:
/// `SpectrumCache` bounds it by a byte budget (default 256 MiB per cache, so per layer), evicting the
/// least recently used length. See `ByteBudgetCache` for the exact thread-safety and eviction rules.
///
/// Example (inside a layer; `kernel(Lk)` returns the Lk x H kernels):
///
///     SpectrumCache<T> spectra;                                   // or std::shared_ptr<SpectrumCache<T>>
///     std::shared_ptr<const KernelSpectrum<T>> s = spectra.get_or_make(L, [&] {
///       return make_kernel_spectrum<T>(kernel(L), L);           // runs outside the cache's lock
///     });
///     spectra.set_budget(64 << 20);  spectra.bytes();  spectra.size();  spectra.clear();

#include "ssm/core/byte_budget_cache.hpp"
#include "ssm/core/causal_convolution.hpp"
#include "ssm/core/types.hpp"

namespace ssm {

/// Kernel spectra keyed by input length L, bounded by a byte budget (LRU eviction, thread-safe).
/// `get_or_make(L, make)` accepts a `make` returning `KernelSpectrum<T>` or a shared_ptr to one.
template <class T>
using SpectrumCache = ByteBudgetCache<Index, KernelSpectrum<T>>;

}  // namespace ssm
