#pragma once
/// \file eigen_test_config.hpp
/// How Eigen is configured in every test translation unit and in the shared layer instances
/// (tests/support/instances): the test CMakeLists force-includes this file (-include) before anything
/// else, so that all code linked into a test executable sees one definition of Eigen's inline
/// functions (the one-definition rule) and any of it can be checked for allocations:
///  - EIGEN_RUNTIME_NO_MALLOC: Eigen checks, at run time, whether heap allocation is allowed
///    (Eigen::internal::set_is_malloc_allowed; allocation_guard.hpp turns it off around a step);
///  - eigen_assert throws std::runtime_error instead of aborting, and stays on in Release builds, so
///    that a forbidden allocation (or any other failed Eigen check) is a test failure, not an abort
///    or nothing at all.

#include <stdexcept>

#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x)                                                \
  do {                                                                 \
    if (!(x)) throw std::runtime_error("eigen_assert failed: " #x);    \
  } while (false)
