#pragma once
// A very small SVG line-plot writer for the examples: one or more panels, each with several
// polylines in a shared box, axis ticks, a title and a legend. No dependency beyond the standard library.
// Long series are thinned per pixel column (first, min, max, last of the points in the column), which
// draws the same picture as every point with a far smaller file. The x axis may be logarithmic.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace svg {

struct Series {
  std::string label;
  std::vector<double> x, y;
  std::string color = "#1f77b4";
  double width = 1.5;
  bool dashed = false;
};

struct Panel {
  std::string title;
  std::string x_label, y_label;
  std::vector<Series> series;
  bool log_x = false;  ///< logarithmic x axis (points with x <= 0 are skipped), ticks at powers of 10
};

inline const char* palette(std::size_t i) {
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  return colors[i % 8];
}

inline std::string number(double v) {
  std::ostringstream s;
  s.precision(3);
  s << v;
  return s.str();
}

/// The points of one series to draw, in pixel coordinates: all of them when there are few, otherwise per
/// pixel column the first, lowest, highest and last point (in their order), so peaks survive.
template <class PX, class PY>
std::vector<std::pair<double, double>> thin(const Series& s, PX px, PY py, bool log_x) {
  std::vector<std::pair<double, double>> all;
  for (std::size_t i = 0; i < s.x.size(); ++i)
    if (std::isfinite(s.y[i]) && (!log_x || s.x[i] > 0)) all.emplace_back(px(s.x[i]), py(s.y[i]));
  if (all.size() < 2000) return all;
  std::vector<std::pair<double, double>> kept;
  std::size_t begin = 0;
  while (begin < all.size()) {
    std::size_t end = begin;
    const double column = std::floor(all[begin].first);
    while (end < all.size() && std::floor(all[end].first) == column) ++end;
    std::size_t lo = begin, hi = begin;
    for (std::size_t i = begin; i < end; ++i) {
      if (all[i].second > all[lo].second) lo = i;  // pixel y grows downwards: largest y is the lowest value
      if (all[i].second < all[hi].second) hi = i;
    }
    std::size_t pick[4] = {begin, std::min(lo, hi), std::max(lo, hi), end - 1};
    for (int k = 0; k < 4; ++k)
      if (k == 0 || pick[k] != pick[k - 1]) kept.push_back(all[pick[k]]);
    begin = end;
  }
  return kept;
}

inline std::string pixel(double v) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << v;
  return s.str();
}

/// Tick values in [lo, hi], widened by `slack` times its length on each side (so that data on [1e-4, 0.9999]
/// still gets the ticks 0 and 1): the multiples of a round step (1, 2 or 5 times a power of 10), 3 to 6 ticks.
inline std::vector<double> round_ticks(double lo, double hi, double slack = 0) {
  const double raw = (hi - lo) / 4, decade = std::pow(10.0, std::floor(std::log10(raw)));
  const double margin = slack * (hi - lo);
  lo -= margin;
  hi += margin;
  const double step = raw / decade < 1.5 ? decade : raw / decade < 3.5 ? 2 * decade : raw / decade < 7.5 ? 5 * decade : 10 * decade;
  std::vector<double> ticks;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; k += 1)
    ticks.push_back(std::abs(k) < 0.5 ? 0.0 : k * step);  // an exact 0, never -1e-17
  return ticks;
}

/// Writes the panels stacked vertically into `path`, each `width` x `height` pixels.
inline void write(const std::string& path, const std::vector<Panel>& panels, int width = 820, int height = 260) {
  const int left = 64, right = 170, top = 30, bottom = 40;
  std::ostringstream out;
  const int total = height * int(panels.size());
  out << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << total
      << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n";
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const Panel& panel = panels[p];
    const int y0 = int(p) * height;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    const bool lx = panel.log_x;
    for (const auto& s : panel.series)
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.y[i]) || (lx && !(s.x[i] > 0))) continue;
        xmin = std::min(xmin, s.x[i]);
        xmax = std::max(xmax, s.x[i]);
        ymin = std::min(ymin, s.y[i]);
        ymax = std::max(ymax, s.y[i]);
      }
    if (lx && xmin < INFINITY) {  // the axis runs in log10 x, from the decade below the data
      xmin = std::floor(std::log10(xmin) + 1e-9);
      xmax = std::log10(xmax);
    }
    if (!(xmax > xmin)) xmax = xmin + 1;
    if (!(ymax > ymin)) ymax = ymin + 1;
    const double pad = 0.05 * (ymax - ymin);
    ymin -= pad;
    ymax += pad;
    const double pw = width - left - right, ph = height - top - bottom;
    auto px = [&](double x) { return left + ((lx ? std::log10(x) : x) - xmin) / (xmax - xmin) * pw; };
    auto py = [&](double y) { return y0 + top + (ymax - y) / (ymax - ymin) * ph; };
    out << "<text x='" << left << "' y='" << y0 + 18 << "' font-size='14' font-weight='bold'>" << panel.title << "</text>\n";
    out << "<rect x='" << left << "' y='" << y0 + top << "' width='" << pw << "' height='" << ph
        << "' fill='none' stroke='#888'/>\n";
    // Ticks: every power of 10 on a log axis, otherwise multiples of a round step (1, 2 or 5 x 10^k).
    std::vector<double> x_ticks;
    if (lx)
      for (double d = xmin; d <= xmax + 1e-9; d += 1) x_ticks.push_back(std::pow(10.0, d));
    else
      x_ticks = round_ticks(xmin, xmax, 0.01);
    for (double xv : x_ticks) {
      out << "<text x='" << px(xv) << "' y='" << y0 + height - bottom + 15 << "' text-anchor='middle'>"
          << (lx && xv >= 1 && xv < 1e7 ? std::to_string(std::lround(xv)) : number(xv)) << "</text>\n";
      if (lx)
        out << "<line x1='" << px(xv) << "' x2='" << px(xv) << "' y1='" << y0 + top << "' y2='" << y0 + top + ph
            << "' stroke='#eee'/>\n";
    }
    for (double yv : round_ticks(ymin, ymax)) {
      out << "<text x='" << left - 6 << "' y='" << py(yv) + 4 << "' text-anchor='end'>" << number(yv) << "</text>\n";
      out << "<line x1='" << left << "' x2='" << left + pw << "' y1='" << py(yv) << "' y2='" << py(yv)
          << "' stroke='#eee'/>\n";
    }
    if (ymin < 0 && ymax > 0)
      out << "<line x1='" << left << "' x2='" << left + pw << "' y1='" << py(0) << "' y2='" << py(0) << "' stroke='#bbb'/>\n";
    out << "<text x='" << left + pw / 2 << "' y='" << y0 + height - 6 << "' text-anchor='middle'>" << panel.x_label
        << "</text>\n";
    for (std::size_t s = 0; s < panel.series.size(); ++s) {
      const Series& series = panel.series[s];
      out << "<polyline fill='none' stroke='" << series.color << "' stroke-width='" << series.width << "'"
          << (series.dashed ? " stroke-dasharray='5,3'" : "") << " points='";
      for (const auto& point : thin(series, px, py, lx)) out << pixel(point.first) << "," << pixel(point.second) << " ";
      out << "'/>\n";
      const double ly = y0 + top + 14 + 16 * double(s);
      out << "<line x1='" << left + pw + 10 << "' x2='" << left + pw + 30 << "' y1='" << ly - 4 << "' y2='" << ly - 4
          << "' stroke='" << series.color << "' stroke-width='2'" << (series.dashed ? " stroke-dasharray='5,3'" : "")
          << "/>\n<text x='" << left + pw + 34 << "' y='" << ly << "'>" << series.label << "</text>\n";
    }
  }
  out << "</svg>\n";
  std::ofstream file(path);
  file << out.str();
  if (!file) std::fprintf(stderr, "could not write %s\n", path.c_str());
}

}  // namespace svg
