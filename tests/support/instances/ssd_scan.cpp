// SsdScan<float> and SsdScan<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/layers/ssd_scan.hpp"

template class ssm::SsdScan<float>;
template class ssm::SsdScan<double>;
