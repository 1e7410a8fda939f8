#pragma once
/// \file ssm.hpp
/// Umbrella header: everything public in ssm.

#include "ssm/core/types.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/fft.hpp"
#include "ssm/core/causal_convolution.hpp"
#include "ssm/io/npy.hpp"
#include "ssm/io/safetensors.hpp"
