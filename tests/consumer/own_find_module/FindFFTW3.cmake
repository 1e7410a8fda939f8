# A consumer's own FindFFTW3.cmake, as many projects carry: other variable names than ssm's and no
# imported targets. ssm's package must neither use it nor be confused by it.
find_path(FFTW3_INCLUDE_DIRS fftw3.h)
find_library(FFTW3_LIBRARIES NAMES fftw3)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(FFTW3 REQUIRED_VARS FFTW3_INCLUDE_DIRS FFTW3_LIBRARIES)
set(CONSUMER_OWN_FIND_FFTW3_USED TRUE)
