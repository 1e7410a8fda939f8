// .npy and safetensors readers: known bytes, golden files, round trips, and corrupt input.
#include "checkpoint_support.hpp"
#include "test_support.hpp"

#include "ssm/io/npy.hpp"
#include "ssm/io/safetensors.hpp"

#include <cstdio>
#include <fstream>

namespace ssm::test {
namespace {

/// A v1 .npy file from a header dict and raw data bytes (the header padded as NumPy pads it).
std::vector<unsigned char> npy_bytes(const std::string& dict, const void* data, std::size_t bytes) {
  std::string header = dict;
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::vector<unsigned char> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.push_back(static_cast<unsigned char>(header.size() & 0xff));
  out.push_back(static_cast<unsigned char>(header.size() >> 8));
  out.insert(out.end(), header.begin(), header.end());
  const auto* p = static_cast<const unsigned char*>(data);
  out.insert(out.end(), p, p + bytes);
  return out;
}

TEST(Npy, COrderAndFortranOrderGiveTheSameMatrix) {
  const double values[6] = {1, 2, 3, 4, 5, 6};
  const auto c = npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", values, sizeof values);
  const auto f = npy_bytes("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", values, sizeof values);
  MatrixX<double> expected_c(2, 3), expected_f(2, 3);
  expected_c << 1, 2, 3, 4, 5, 6;  // row by row
  expected_f << 1, 3, 5, 2, 4, 6;  // column by column
  EXPECT_EQ(io::parse_npy(c.data(), c.size()).matrix<double>(), expected_c);
  EXPECT_EQ(io::parse_npy(f.data(), f.size()).matrix<double>(), expected_f);
  // values() is always C order: Fortran bytes 1..6 of a (2,3) array read row by row are 1 3 5 2 4 6.
  const std::vector<float> flat = io::parse_npy(f.data(), f.size()).values<float>();
  EXPECT_EQ(flat, (std::vector<float>{1, 3, 5, 2, 4, 6}));
}

TEST(Npy, ThreeDimensionalFortranOrder) {
  // shape (2, 2, 2), Fortran order: element (i, j, k) is stored at i + 2 j + 4 k.
  const std::int64_t values[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  const auto f = npy_bytes("{'descr': '<i8', 'fortran_order': True, 'shape': (2, 2, 2), }", values, sizeof values);
  const auto flat = io::parse_npy(f.data(), f.size()).values<std::int64_t>();
  // C order walks (0,0,0) (0,0,1) (0,1,0) (0,1,1) (1,0,0) ...
  EXPECT_EQ(flat, (std::vector<std::int64_t>{0, 4, 2, 6, 1, 5, 3, 7}));
}

TEST(Npy, ElementTypes) {
  const float f32[2] = {1.5f, -2.25f};
  const std::complex<float> c64[2] = {{1, 2}, {-3, 0.5f}};
  const std::int32_t i32[2] = {-7, 9};
  auto a = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f32, sizeof f32);
  EXPECT_EQ(io::parse_npy(a.data(), a.size()).matrix<double>(), (MatrixX<double>(2, 1) << 1.5, -2.25).finished());
  auto b = npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", c64, sizeof c64);
  const auto cb = io::parse_npy(b.data(), b.size());
  EXPECT_EQ(cb.values<std::complex<double>>()[1], std::complex<double>(-3, 0.5));
  EXPECT_THROW(cb.values<double>(), ssm::error);  // would drop the imaginary part
  auto c = npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", i32, sizeof i32);
  EXPECT_EQ(io::parse_npy(c.data(), c.size()).values<std::int64_t>(), (std::vector<std::int64_t>{-7, 9}));
  // A 0-d array holds one element.
  const double scalar = 3.25;
  auto d = npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &scalar, sizeof scalar);
  EXPECT_EQ(io::parse_npy(d.data(), d.size()).matrix<double>()(0, 0), 3.25);
}

TEST(Npy, GoldenComplexArrayHasTheS4DLinValues) {
  // S4D-Lin: A_n = -1/2 - i pi n, the same in every channel: an analytic check of complex128 reading.
  // The reference stores the real part as a float32 log and clamps |imag| >= 1e-4, hence 2e-4.
  const auto A = golden("s4d_zoh_diag-lin", "A").matrix<std::complex<double>>();
  ASSERT_EQ(A.rows(), 2);
  ASSERT_EQ(A.cols(), 4);
  for (Index h = 0; h < 2; ++h)
    for (Index n = 0; n < 4; ++n) {
      EXPECT_NEAR(A(h, n).real(), -0.5, 2e-4);
      EXPECT_NEAR(A(h, n).imag(), -M_PI * n, 2e-4);
    }
  const auto ids = golden("mamba_lm", "input_ids");
  EXPECT_EQ(ids.type, io::NpyType::int64);
  EXPECT_EQ(ids.shape, (std::vector<Index>{11}));
}

TEST(Npy, WriteThenReadRoundTrips) {
  std::mt19937_64 gen(3);
  const std::string path = ::testing::TempDir() + "/ssm_roundtrip.npy";
  const MatrixX<double> m = random_normal<double>(5, 7, gen);
  io::write_npy(path, m);
  EXPECT_EQ(io::read_npy(path).matrix<double>(), m);
  const MatrixXc<float> c = random_complex<float>(3, 2, gen);
  io::write_npy(path, c);
  EXPECT_EQ(io::read_npy(path).matrix<std::complex<float>>(), c);
  io::write_npy(path, std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {3, 2});
  const auto back = io::read_npy(path);
  EXPECT_EQ(back.shape, (std::vector<Index>{3, 2}));
  EXPECT_EQ(back.matrix<double>(), (MatrixX<double>(3, 2) << 1, 2, 3, 4, 5, 6).finished());
  std::remove(path.c_str());
}

TEST(Npy, MalformedFilesAreErrorsNamingTheProblem) {
  const double values[4] = {1, 2, 3, 4};
  const auto good = npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", values, sizeof values);
  // Every truncation is rejected.
  for (std::size_t n = 0; n < good.size(); ++n) EXPECT_THROW(io::parse_npy(good.data(), n), ssm::error) << n;
  auto expect_message = [](const std::vector<unsigned char>& bytes, const std::string& fragment) {
    try {
      io::parse_npy(bytes.data(), bytes.size());
      ADD_FAILURE() << "expected ssm::error mentioning " << fragment;
    } catch (const ssm::error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_message(npy_bytes("{'descr': '>f8', 'fortran_order': False, 'shape': (2, 2), }", values, sizeof values), "descr");
  expect_message(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", values, sizeof values), "data");
  expect_message(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", values,
                           sizeof values),
                 "data");
  expect_message(npy_bytes("{'descr': '<f8', 'fortran_order': Maybe, 'shape': (2, 2), }", values, sizeof values),
                 "fortran_order");
  expect_message(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2, -2), }", values, sizeof values), "shape");
  // A header length pointing past the end.
  auto lying = good;
  lying[8] = 0xff;
  lying[9] = 0xff;
  expect_message(lying, "header");
  EXPECT_THROW(io::read_npy("/nonexistent/file.npy"), ssm::error);
  // A 3-d array is not a matrix.
  const auto three = golden("s4d_zoh_diag-lin", "u");
  EXPECT_THROW(three.matrix<double>(), ssm::error);
}

TEST(Safetensors, HalfAndBfloat16ConvertExactly) {
  EXPECT_EQ(io::half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(io::half_to_float(0xc000), -2.0f);
  EXPECT_EQ(io::half_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(io::half_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(io::half_to_float(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(io::half_to_float(0x8400), -std::ldexp(1.0f, -14));
  EXPECT_TRUE(std::isinf(io::half_to_float(0x7c00)));
  EXPECT_TRUE(std::isnan(io::half_to_float(0x7e00)));
  EXPECT_EQ(io::bfloat16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(io::bfloat16_to_float(0xc0a0), -5.0f);
  // Every finite half converts to the value its fields define.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const std::uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) continue;
    const double mag = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(1.0 + m / 1024.0, int(e) - 15);
    ASSERT_EQ(double(io::half_to_float(std::uint16_t(h))), (h & 0x8000) ? -mag : mag) << h;
  }
}

TEST(Safetensors, RowMajorLayoutIsHonoured) {
  const auto bytes = io::make_safetensors({{"w", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"conv", {2, 1, 2}, {1, 2, 3, 4}}, {"b", {3}, {7, 8, 9}}});
  const auto f = io::SafetensorsFile::parse(bytes);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"b", "conv", "w"}));
  EXPECT_EQ(f.matrix<float>("w"), (MatrixX<float>(2, 3) << 1, 2, 3, 4, 5, 6).finished());
  EXPECT_EQ(f.matrix<double>("conv"), (MatrixX<double>(2, 2) << 1, 2, 3, 4).finished());
  EXPECT_EQ(f.matrix<float>("b"), (MatrixX<float>(3, 1) << 7, 8, 9).finished());
  EXPECT_EQ(f.matrix<float>("w", {2, 3}).rows(), 2);
  try {
    f.matrix<float>("w", {3, 2});
    ADD_FAILURE() << "expected a shape error";
  } catch (const ssm::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'w'"), std::string::npos) << what;
    EXPECT_NE(what.find("(3, 2)"), std::string::npos) << what;
    EXPECT_NE(what.find("(2, 3)"), std::string::npos) << what;
  }
  try {
    f.info("missing.weight");
    ADD_FAILURE() << "expected a missing-tensor error";
  } catch (const ssm::error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.weight"), std::string::npos);
  }
}

TEST(Safetensors, F16AndBF16Tensors) {
  // (2,) F16 [1, -2] and (1, 2) BF16 [1, -5]; metadata kept.
  const std::vector<unsigned char> data = {0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f, 0xa0, 0xc0};
  const auto bytes = raw_safetensors(
      R"({"__metadata__": {"format": "pt"}, "h": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},)"
      R"( "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [4, 8]}})",
      data);
  const auto f = io::SafetensorsFile::parse(bytes);
  EXPECT_EQ(f.values<float>("h"), (std::vector<float>{1, -2}));
  EXPECT_EQ(f.matrix<double>("b"), (MatrixX<double>(1, 2) << 1, -5).finished());
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST(Safetensors, GoldenCheckpointReads) {
  const auto f = io::SafetensorsFile::read(data_path("mamba_lm/model.safetensors"));
  ASSERT_TRUE(f.contains("backbone.embedding.weight"));
  EXPECT_EQ(f.info("backbone.embedding.weight").shape, (std::vector<Index>{64, 32}));
  EXPECT_EQ(f.info("backbone.layers.0.mixer.conv1d.weight").shape, (std::vector<Index>{64, 1, 4}));
  const auto a_log = f.matrix<double>("backbone.layers.0.mixer.A_log");
  // Mamba initialises A_log[d, n] = log(n + 1): an independent check of F32 reading and layout.
  ASSERT_EQ(a_log.cols(), 4);
  for (Index n = 0; n < 4; ++n) EXPECT_NEAR(a_log(0, n), std::log(double(n + 1)), 1e-6);
}

TEST(Safetensors, CorruptFilesAreErrors) {
  const auto good = io::make_safetensors({{"w", {2, 2}, {1, 2, 3, 4}}});
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(io::SafetensorsFile::parse(std::vector<unsigned char>(good.begin(), good.begin() + std::ptrdiff_t(n))),
                 ssm::error)
        << "truncated to " << n;
  }
  const std::vector<unsigned char> sixteen(16, 0);
  auto expect_message = [](const std::vector<unsigned char>& bytes, const std::string& fragment) {
    try {
      io::SafetensorsFile::parse(bytes);
      ADD_FAILURE() << "expected ssm::error mentioning " << fragment;
    } catch (const ssm::error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_message(raw_safetensors("not json", sixteen), "JSON");
  expect_message(raw_safetensors("[1, 2]", sixteen), "JSON object");
  expect_message(raw_safetensors(R"({"w": {"dtype": "Q8", "shape": [2], "data_offsets": [0, 2]}})", sixteen), "dtype");
  expect_message(raw_safetensors(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}})", sixteen), "'w'");
  expect_message(raw_safetensors(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})", sixteen), "data_offsets");
  expect_message(raw_safetensors(R"({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})", sixteen), "shape");
  expect_message(raw_safetensors(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 16]}})",
                                 sixteen),
                 "'w'");
  expect_message(raw_safetensors(R"({"w": {"dtype": "F32", "shape": [4]}})", sixteen), "data_offsets");
  auto lying = good;
  lying[7] = 0x7f;  // header length ~ 2^62
  expect_message(lying, "header length");
  EXPECT_THROW(io::SafetensorsFile::read("/nonexistent/model.safetensors"), ssm::error);
}

}  // namespace
}  // namespace ssm::test
