#pragma once
/// \file checkpoint.hpp
/// A checkpoint's tensors, whether in one safetensors file or sharded over several.
///
/// A checkpoint directory holds either model.safetensors, or shards (model-00001-of-00002.safetensors,
/// ...) and the index that says which shard holds each tensor, model.safetensors.index.json:
///   {"metadata": {"total_size": ...}, "weight_map": {"backbone.norm_f.weight": "model-00002-of-00002.safetensors", ...}}
/// (the layout Hugging Face's save_pretrained writes). `Checkpoint` presents both the same way: one set of
/// tensor names, each read from the file that holds it. Every shard is mapped (io::SafetensorsFile::read),
/// so opening a sharded checkpoint reads only headers.
///
/// The index is checked before anything is trusted: weight_map must be an object of file names in the
/// checkpoint's own directory (no path separators, no "." or ".."); each tensor it names must be in the
/// shard it names, and each tensor of a shard must be in the index under that shard. So a tensor is never
/// read from a file the index does not name for it, and none is silently left out.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/io/safetensors.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ssm::io {

/// Tensors of one or more safetensors files, each name in exactly one of them.
class Checkpoint {
 public:
  /// The index file's name, as Hugging Face writes it.
  static constexpr const char* index_name = "model.safetensors.index.json";
  /// The single file's name.
  static constexpr const char* single_name = "model.safetensors";

  /// Opens `directory`: the shards of its model.safetensors.index.json when it has one, else its
  /// model.safetensors. \throws ssm::error naming the file, the shard or the tensor at fault.
  static Checkpoint open(const std::string& directory) {
    const std::string index_path = directory + "/" + index_name;
    std::ifstream index(index_path);
    if (!index) return single(SafetensorsFile::read(directory + "/" + single_name));
    const std::string text((std::istreambuf_iterator<char>(index)), std::istreambuf_iterator<char>());
    return from_index(parse_index(text, index_path), index_path,
                      [&](const std::string& shard) { return SafetensorsFile::read(directory + "/" + shard); });
  }

  /// One file holding every tensor.
  static Checkpoint single(SafetensorsFile file) {
    Checkpoint c;
    c.source_ = file.source();
    for (const std::string& name : file.names()) c.where_.emplace(name, 0);
    c.files_.push_back(std::move(file));
    return c;
  }

  /// The weight map of an index file's text (tensor name -> shard file name), validated; `source` names the
  /// index in messages. \throws ssm::error naming the field at fault.
  static std::map<std::string, std::string> parse_index(const std::string& text, const std::string& source) {
    const auto fail = [&](const std::string& what) { throw error(ssm::detail::concat("Checkpoint: ", source, ": ", what)); };
    const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object()) fail("expected a JSON object with a weight_map");
    const auto map = json.find("weight_map");
    if (map == json.end() || !map->is_object() || map->empty())
      fail("weight_map: expected a non-empty object of tensor name -> shard file name");
    std::map<std::string, std::string> out;
    for (const auto& [tensor, shard] : map->items()) {
      if (!shard.is_string()) fail(ssm::detail::concat("weight_map.", tensor, ": expected a file name, got ", shard.dump()));
      const std::string file = shard.get<std::string>();
      if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
          file.find('\\') != std::string::npos || file.find('\0') != std::string::npos)
        fail(ssm::detail::concat("weight_map.", tensor, ": expected a file name in the checkpoint's directory, got ",
                                 shard.dump()));
      out.emplace(tensor, file);
    }
    return out;
  }

  /// The checkpoint of a parsed weight map: `open_shard(file name)` gives each named shard once. Checks
  /// that the shards and the map agree tensor by tensor (see the file comment).
  static Checkpoint from_index(const std::map<std::string, std::string>& weight_map, const std::string& source,
                               const std::function<SafetensorsFile(const std::string&)>& open_shard) {
    const auto fail = [&](const std::string& what) { throw error(ssm::detail::concat("Checkpoint: ", source, ": ", what)); };
    Checkpoint c;
    c.source_ = source;
    c.sharded_ = true;
    std::map<std::string, std::size_t> shard_index;
    for (const auto& [tensor, shard] : weight_map) {
      if (shard_index.count(shard)) continue;
      shard_index.emplace(shard, c.files_.size());
      c.files_.push_back(open_shard(shard));
    }
    for (const auto& [tensor, shard] : weight_map) {
      const std::size_t k = shard_index.at(shard);
      if (!c.files_[k].contains(tensor))
        fail(ssm::detail::concat("weight_map.", tensor, ": shard '", shard, "' has no such tensor"));
      c.where_.emplace(tensor, k);
    }
    for (const auto& [shard, k] : shard_index)
      for (const std::string& name : c.files_[k].names()) {
        const auto it = weight_map.find(name);
        if (it == weight_map.end() || it->second != shard)
          fail(ssm::detail::concat("shard '", shard, "' holds tensor '", name, "', which the weight_map ",
                                   it == weight_map.end() ? std::string("does not list")
                                                          : ssm::detail::concat("puts in '", it->second, "'")));
      }
    return c;
  }

  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(where_.size());
    for (const auto& entry : where_) out.push_back(entry.first);
    return out;
  }

  bool contains(const std::string& name) const { return where_.count(name) != 0; }

  /// The file that holds `name`; `ssm::error` naming it when no file does.
  const SafetensorsFile& file_of(const std::string& name) const {
    const auto it = where_.find(name);
    if (it != where_.end()) return files_[it->second];
    if (!sharded_ && files_.size() == 1) files_[0].info(name);  // throws: "<file>: tensor '<name>': not in the file"
    throw error(ssm::detail::concat("Checkpoint: ", source_, ": tensor '", name, "': not in the weight_map"));
  }

  const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }

  /// The tensor as a matrix after checking its PyTorch shape (SafetensorsFile::matrix).
  template <class T>
  MatrixX<T> matrix(const std::string& name, const std::vector<Index>& shape) const {
    return file_of(name).template matrix<T>(name, shape);
  }

  /// The files, one per shard (one for an unsharded checkpoint).
  const std::vector<SafetensorsFile>& files() const { return files_; }
  /// The index file or the single file, for messages.
  const std::string& source() const { return source_; }

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, std::size_t> where_;  ///< Tensor name -> index in files_.
  std::string source_;
  bool sharded_ = false;  ///< Built from an index (else one file).
};

}  // namespace ssm::io
