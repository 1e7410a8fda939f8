// MambaLM<float> and MambaLM<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/models/mamba_lm.hpp"

template class ssm::MambaLM<float>;
template class ssm::MambaLM<double>;
