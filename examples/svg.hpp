#pragma once
// A very small SVG line-plot writer for the examples: one or more panels, each with several
// polylines in a shared box, axis ticks, a title and a legend. No dependency beyond the standard library.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
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
    for (const auto& s : panel.series)
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.y[i])) continue;
        xmin = std::min(xmin, s.x[i]);
        xmax = std::max(xmax, s.x[i]);
        ymin = std::min(ymin, s.y[i]);
        ymax = std::max(ymax, s.y[i]);
      }
    if (!(xmax > xmin)) xmax = xmin + 1;
    if (!(ymax > ymin)) ymax = ymin + 1;
    const double pad = 0.05 * (ymax - ymin);
    ymin -= pad;
    ymax += pad;
    const double pw = width - left - right, ph = height - top - bottom;
    auto px = [&](double x) { return left + (x - xmin) / (xmax - xmin) * pw; };
    auto py = [&](double y) { return y0 + top + (ymax - y) / (ymax - ymin) * ph; };
    out << "<text x='" << left << "' y='" << y0 + 18 << "' font-size='14' font-weight='bold'>" << panel.title << "</text>\n";
    out << "<rect x='" << left << "' y='" << y0 + top << "' width='" << pw << "' height='" << ph
        << "' fill='none' stroke='#888'/>\n";
    for (int t = 0; t <= 4; ++t) {
      const double xv = xmin + (xmax - xmin) * t / 4, yv = ymin + (ymax - ymin) * t / 4;
      out << "<text x='" << px(xv) << "' y='" << y0 + height - bottom + 15 << "' text-anchor='middle'>" << number(xv)
          << "</text>\n";
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
      for (std::size_t i = 0; i < series.x.size(); ++i)
        if (std::isfinite(series.y[i])) out << px(series.x[i]) << "," << py(series.y[i]) << " ";
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
