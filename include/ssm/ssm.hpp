#pragma once
/// \file ssm.hpp
/// Umbrella header: everything public in ssm.
///
///   core/       aliases and per-scalar traits, errors and checks, FFT plans, causal convolution, scans
///   hippo       HiPPO transition matrices, NPLR form, diagonal initialisations
///   discretize  bilinear and ZOH for diagonal and DPLR systems; discretize_dense for dense ones
///   kernels/    Cauchy (DPLR) and Vandermonde (diagonal) convolution kernels
///   layers/     S4, S4D, LinearRecurrentUnit, the selective scan, the Mamba block
///   models/     the Mamba language model
///   io/         .npy and safetensors readers

#include "ssm/core/types.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/layer.hpp"
#include "ssm/core/batch.hpp"
#include "ssm/core/snapshots.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/spectrum_cache.hpp"
#include "ssm/core/fft.hpp"
#include "ssm/core/causal_convolution.hpp"
#include "ssm/core/diagonal_scan.hpp"
#include "ssm/hippo.hpp"
#include "ssm/discretize.hpp"
#include "ssm/discretize_dense.hpp"
#include "ssm/kernels/cauchy.hpp"
#include "ssm/kernels/vandermonde.hpp"
#include "ssm/kernels/state_sums.hpp"
#include "ssm/layers/s4.hpp"
#include "ssm/layers/s4d.hpp"
#include "ssm/layers/lru.hpp"
#include "ssm/layers/s4_block.hpp"
#include "ssm/layers/selective_scan.hpp"
#include "ssm/layers/mamba.hpp"
#include "ssm/layers/ssd_scan.hpp"
#include "ssm/layers/mamba2.hpp"
#include "ssm/models/mamba_lm.hpp"
#include "ssm/models/s4_model.hpp"
#include "ssm/models/sampling.hpp"
#include "ssm/io/npy.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/io/state_io.hpp"
