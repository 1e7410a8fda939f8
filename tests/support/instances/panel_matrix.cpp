// PanelMatrix<float> and PanelMatrix<double>, compiled once for all the test executables (see SSM_NOINLINE
// in ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/core/panel_matrix.hpp"

template class ssm::PanelMatrix<float>;
template class ssm::PanelMatrix<double>;
