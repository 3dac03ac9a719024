// Synthetic chest radiographs: the procedural renderer (anatomy, consolidations, exposure,
// blur, noise) and the data set writer (class/split assignment, parallel PNG writing,
// manifest.csv and synth.json).
//
// Rendering works in "density" units: 0 is air, soft tissue about 0.4, bone and
// mediastinum up to about 1. Every shape is analytic in anatomical coordinates (u to the
// image's right, v down, the torso spanning about [-0.45, 0.45]), so a pixel costs a few
// dozen flops whatever the size, with no loop over primitives: the ribs of a side are
// one periodic function of a warped coordinate, and lesions are drawn only inside their
// bounding boxes. The density map then goes through a random exposure curve, a Gaussian
// blur and intensity-dependent noise.
#include "data/synth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <numeric>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/rng.h"

namespace cxr::data {

namespace fs = std::filesystem;
using detail::cat;

namespace {

constexpr float kPi = 3.14159265358979f;

// ---------------------------------------------------------------- random numbers

// Independent Philox streams of one image: the purpose sits in the top 16 bits of the
// counter's upper word, the image index in the low 48 bits, and the lower word counts
// draws. Anatomy, exposure and noise never read the lesion streams, so an image's
// NORMAL and PNEUMONIA versions share everything but the consolidations.
enum class Stream : uint64_t { anatomy = 1, exposure = 2, noise = 3, markings = 4, lesion = 5, lesion_texture = 6, assign = 7 };
constexpr uint64_t kIndexBits = 48;

class Rng {
 public:
  Rng(uint64_t seed, int64_t index, Stream stream)
      : key_(seed), hi_((static_cast<uint64_t>(stream) << kIndexBits) | static_cast<uint64_t>(index)) {}
  uint32_t u32() {
    if (left_ == 0) {
      block_ = philox4x32(key_, lo_++, hi_);
      left_ = 4;
    }
    return block_.v[4 - left_--];
  }
  float uniform() { return bits_to_uniform(u32()); }
  float uniform(float a, float b) { return a + (b - a) * uniform(); }
  // Integer in [0, n); the modulo bias of a 64-bit draw is below 2^-30 for any n used here.
  uint64_t below(uint64_t n) {
    const uint64_t x = (static_cast<uint64_t>(u32()) << 32) | u32();
    return x % n;
  }
  // Two independent standard normals (Box-Muller).
  void normal2(float& a, float& b) {
    const double r = std::sqrt(-2.0 * std::log(bits_to_uniform_open(u32())));
    const double th = 2.0 * 3.14159265358979323846 * bits_to_uniform(u32());
    a = static_cast<float>(r * std::cos(th));
    b = static_cast<float>(r * std::sin(th));
  }

 private:
  uint64_t key_, hi_, lo_ = 0;
  PhiloxBlock block_{};
  int left_ = 0;
};

// ---------------------------------------------------------------- shaping helpers

inline float sq(float x) { return x * x; }
inline float clamp01(float x) { return std::min(1.0f, std::max(0.0f, x)); }
inline float frac(float x) { return x - std::floor(x); }
// Hermite step from 0 at e0 to 1 at e1 (e0 > e1 gives a falling step).
inline float smoothstep(float e0, float e1, float x) {
  const float t = clamp01((x - e0) / (e1 - e0));
  return t * t * (3.0f - 2.0f * t);
}
// Smooth compact bump of a squared normalised radius: (1 - r2)^2 inside the unit disc.
inline float bump(float r2) { return r2 < 1.0f ? sq(1.0f - r2) : 0.0f; }

// Smooth 2-D value noise on [0, 1]^2: random values on a (cx+1) x (cy+1) lattice,
// blended with smoothstep weights. Values in [0, 1).
class ValueNoise {
 public:
  ValueNoise(int cx, int cy, Rng& rng) : cx_(cx), cy_(cy), v_(static_cast<size_t>(cx + 1) * (cy + 1)) {
    for (float& x : v_) x = rng.uniform();
  }
  float at(float x, float y) const {
    x = clamp01(x) * static_cast<float>(cx_);
    y = clamp01(y) * static_cast<float>(cy_);
    const int ix = std::min(static_cast<int>(x), cx_ - 1), iy = std::min(static_cast<int>(y), cy_ - 1);
    float fx = x - static_cast<float>(ix), fy = y - static_cast<float>(iy);
    fx = fx * fx * (3.0f - 2.0f * fx);
    fy = fy * fy * (3.0f - 2.0f * fy);
    const float* r0 = &v_[static_cast<size_t>(iy) * (cx_ + 1) + ix];
    const float* r1 = r0 + cx_ + 1;
    const float a = r0[0] + (r0[1] - r0[0]) * fx, b = r1[0] + (r1[1] - r1[0]) * fx;
    return a + (b - a) * fy;
  }

 private:
  int cx_, cy_;
  std::vector<float> v_;
};

// ---------------------------------------------------------------- anatomy

// One lung field in side-local coordinates: t = |u| (distance from the midline), v down.
struct Lung {
  float apex_v, apex_t, apex_k;  // top border: v = apex_v + apex_k (t - apex_t)^2
  float top_w, base_w;           // lateral border widens from top_w to base_w below the apex
  float medial;                  // medial border t = medial
  float dia_v, dia_t, dia_k;     // diaphragm dome: v = dia_v + dia_k (t - dia_t)^2
  float wobble_a, wobble_f, wobble_p;  // ripple of the lateral border
  float hilum_t, hilum_v;
  float rib_phase, ant_phase;
};

// Signed margins to the four borders of a lung (positive inside).
struct Borders {
  float medial, lateral, top, bottom;
  float inside() const { return std::min(std::min(medial, lateral), std::min(top, bottom)); }
};

Borders lung_borders(const Lung& L, float t, float v) {
  const float lateral = L.top_w + (L.base_w - L.top_w) * smoothstep(L.apex_v, L.apex_v + 0.3f, v) +
                        L.wobble_a * std::sin(L.wobble_f * v + L.wobble_p);
  return {t - L.medial, lateral - t, v - (L.apex_v + L.apex_k * sq(t - L.apex_t)),
          L.dia_v + L.dia_k * sq(t - L.dia_t) - v};
}

struct Anatomy {
  // Pose: (u, v) = R(-rot) (p - off) * inv_scale, p the pixel centre in image units
  // with the image centre at 0.
  float off_x, off_y, inv_scale, cos_r, sin_r;
  float neck_w, shoulder_v, shoulder_w, waist_w, soft;
  Lung lung[2];  // [0] image left (patient's right), [1] image right (patient's left)
  float lung_depth;
  float heart_u, heart_v, heart_a, heart_b, heart_cos, heart_sin, heart_d;
  float spine_w, spine_d, vert_period, vert_phase, medi_w, medi_d, trachea_d;
  float rib_s0, rib_alpha, rib_beta, rib_d, rib_w, ant_gamma, ant_d;
  bool clavicles;
  float clav_t0, clav_v0, clav_t1, clav_v1, clav_r, clav_d;
  float abdomen_d, hilum_d, mark_amp;
};

// Every parameter is drawn unconditionally so the stream's layout never depends on values.
Anatomy sample_anatomy(Rng& r) {
  Anatomy A{};
  A.off_x = r.uniform(-0.03f, 0.03f);
  A.off_y = r.uniform(-0.02f, 0.04f);
  A.inv_scale = 1.0f / r.uniform(0.88f, 1.04f);
  const float rot = r.uniform(-0.06f, 0.06f);
  A.cos_r = std::cos(rot);
  A.sin_r = std::sin(rot);
  A.neck_w = r.uniform(0.08f, 0.11f);
  A.shoulder_v = r.uniform(-0.42f, -0.35f);
  A.shoulder_w = r.uniform(0.44f, 0.50f);
  A.waist_w = r.uniform(0.40f, 0.47f);
  A.soft = r.uniform(0.36f, 0.46f);
  const float apex = r.uniform(-0.36f, -0.30f), base_w = r.uniform(0.33f, 0.40f), dia = r.uniform(0.13f, 0.21f);
  for (int s = 0; s < 2; ++s) {
    Lung& L = A.lung[s];
    L.apex_v = apex + r.uniform(-0.015f, 0.015f);
    L.apex_t = r.uniform(0.15f, 0.19f);
    L.apex_k = r.uniform(2.5f, 4.0f);
    L.top_w = r.uniform(0.22f, 0.27f);
    L.base_w = base_w + r.uniform(-0.015f, 0.015f);
    L.medial = r.uniform(0.06f, 0.085f);
    L.dia_v = dia + r.uniform(0.01f, 0.045f) * static_cast<float>(s);  // the left dome sits lower
    L.dia_t = r.uniform(0.16f, 0.22f);
    L.dia_k = r.uniform(0.9f, 1.6f);
    L.wobble_a = r.uniform(0.0f, 0.012f);
    L.wobble_f = r.uniform(6.0f, 14.0f);
    L.wobble_p = r.uniform(0.0f, 2.0f * kPi);
    L.hilum_t = r.uniform(0.09f, 0.13f);
    L.hilum_v = r.uniform(-0.07f, 0.0f);
    L.rib_phase = r.uniform();
    L.ant_phase = r.uniform();
  }
  A.lung_depth = r.uniform(0.26f, 0.34f);
  A.heart_u = r.uniform(0.04f, 0.09f);
  A.heart_a = r.uniform(0.13f, 0.18f);
  A.heart_b = r.uniform(0.10f, 0.13f);
  A.heart_v = A.lung[1].dia_v - A.heart_b * r.uniform(0.35f, 0.6f);
  const float tilt = r.uniform(0.2f, 0.6f);  // long axis from upper left to lower right
  A.heart_cos = std::cos(tilt);
  A.heart_sin = std::sin(tilt);
  A.heart_d = r.uniform(0.13f, 0.2f);
  A.spine_w = r.uniform(0.035f, 0.05f);
  A.spine_d = r.uniform(0.1f, 0.17f);
  A.vert_period = r.uniform(0.036f, 0.046f);
  A.vert_phase = r.uniform();
  A.medi_w = r.uniform(0.075f, 0.095f);
  A.medi_d = r.uniform(0.14f, 0.22f);
  A.trachea_d = r.uniform(0.06f, 0.12f);
  A.rib_s0 = r.uniform(0.052f, 0.066f);
  A.rib_alpha = r.uniform(1.0f, 1.8f);
  A.rib_beta = r.uniform(0.05f, 0.15f);
  A.rib_d = r.uniform(0.09f, 0.16f);
  A.rib_w = r.uniform(0.38f, 0.5f);
  A.ant_gamma = r.uniform(0.35f, 0.6f);
  A.ant_d = A.rib_d * r.uniform(0.35f, 0.6f);
  A.clavicles = r.uniform() < 0.85f;
  A.clav_t0 = r.uniform(0.03f, 0.05f);
  A.clav_v0 = A.lung[0].apex_v + r.uniform(0.0f, 0.04f);
  A.clav_t1 = r.uniform(0.28f, 0.34f);
  A.clav_v1 = A.clav_v0 - r.uniform(0.03f, 0.08f);
  A.clav_r = r.uniform(0.014f, 0.02f);
  A.clav_d = r.uniform(0.12f, 0.2f);
  A.abdomen_d = r.uniform(0.12f, 0.22f);
  A.hilum_d = r.uniform(0.05f, 0.10f);
  A.mark_amp = r.uniform(0.035f, 0.07f);
  return A;
}

// One rib's cross-section at fraction f of the rib period: a band of width w with
// brighter cortical edges.
inline float rib_profile(float f, float w) {
  if (f >= w) return 0.0f;
  const float x = f / w;
  return smoothstep(0.0f, 0.18f, x) * smoothstep(1.0f, 0.82f, x) * (0.75f + 0.25f * sq(2.0f * x - 1.0f));
}

inline float segment_distance(float t, float v, float t0, float v0, float t1, float v1) {
  const float dt = t1 - t0, dv = v1 - v0;
  const float h = clamp01(((t - t0) * dt + (v - v0) * dv) / (dt * dt + dv * dv));
  return std::sqrt(sq(t - t0 - h * dt) + sq(v - v0 - h * dv));
}

struct Markings {
  ValueNoise blotch;   // 2-D lung texture
  ValueNoise streaks;  // angular noise (x: angle, y = 0 / 1: image left / right lung): vessels from the hila
};

// Density at anatomical point (u, v); *lung receives the lung-field membership in [0, 1]
// (0 where the heart covers the lung).
float density_at(const Anatomy& A, const Markings& M, float u, float v, float* lung_out) {
  *lung_out = 0.0f;
  const float t = std::fabs(u);
  const float W = A.neck_w + (A.shoulder_w - A.neck_w) * smoothstep(A.shoulder_v - 0.14f, A.shoulder_v, v) +
                  (A.waist_w - A.shoulder_w) * clamp01((v - A.shoulder_v) / 0.8f);
  const float q = t / W;
  if (q >= 1.0f) return 0.0f;  // outside the body: air
  float d = A.soft * std::sqrt(1.0f - q * q);

  // Mediastinum, spine (vertebral bodies, discs, pedicles), trachea.
  d += A.medi_d * (1.0f - smoothstep(0.75f * A.medi_w, A.medi_w, t));
  if (t < A.spine_w) {
    const float f = frac(v / A.vert_period + A.vert_phase);
    const float disc = smoothstep(0.80f, 0.86f, f) * (1.0f - smoothstep(0.94f, 1.0f, f));
    const float ped = bump(sq((t - 0.62f * A.spine_w) / (0.22f * A.spine_w)) + sq((f - 0.35f) / 0.2f));
    d += A.spine_d * (1.0f - smoothstep(0.8f * A.spine_w, A.spine_w, t)) * (0.8f - 0.35f * disc + 0.25f * ped);
  }
  if (t < 0.02f) d -= A.trachea_d * (1.0f - smoothstep(0.010f, 0.018f, t)) * smoothstep(-0.07f, -0.13f, v);

  // Heart: a tilted ellipse, thicker in the middle.
  const float hu = u - A.heart_u, hv = v - A.heart_v;
  const float e1 = (A.heart_cos * hu + A.heart_sin * hv) / A.heart_a;
  const float e2 = (-A.heart_sin * hu + A.heart_cos * hv) / A.heart_b;
  const float er = e1 * e1 + e2 * e2;
  float heart = 0.0f;
  if (er < 1.0f) {
    heart = 1.0f - smoothstep(0.6f, 1.0f, er);
    d += A.heart_d * heart * (0.5f + 0.5f * std::sqrt(1.0f - er));
  }

  // Lung field of this side: air removes density; the heart covers part of the left lung.
  const Lung& L = A.lung[u < 0.0f ? 0 : 1];
  const Borders b = lung_borders(L, t, v);
  const float inside = b.inside();
  float lung = 0.0f;
  if (inside > 0.0f) {
    lung = smoothstep(0.0f, 0.025f, inside) * (1.0f - 0.85f * heart);
    d -= A.lung_depth * lung * (0.8f + 0.2f * smoothstep(0.0f, 0.1f, inside));
  }
  // Below the diaphragm domes; the two domes blend across the midline.
  const float dome0 = A.lung[0].dia_v + A.lung[0].dia_k * sq(t - A.lung[0].dia_t);
  const float dome1 = A.lung[1].dia_v + A.lung[1].dia_k * sq(t - A.lung[1].dia_t);
  const float dome = dome0 + (dome1 - dome0) * smoothstep(-0.06f, 0.06f, u);
  d += A.abdomen_d * smoothstep(-0.004f, 0.012f, v - dome);

  // Hilum and lung markings (blotchy texture and vessels fanning out of the hilum).
  const float hr2 = sq(t - L.hilum_t) + sq(v - L.hilum_v);
  d += A.hilum_d * bump(hr2 / sq(0.06f));
  if (lung > 0.0f) {
    const float hr = std::sqrt(hr2);
    const float near = 1.0f - smoothstep(0.03f, 0.3f, hr);
    const float blotch = M.blotch.at(0.5f + 0.9f * u, 0.5f + 0.9f * v) - 0.5f;
    const float ang = std::atan2(v - L.hilum_v, t - L.hilum_t) * (0.5f / kPi) + 0.5f;
    const float vessel = smoothstep(0.55f, 0.85f, M.streaks.at(ang, u < 0.0f ? 0.0f : 1.0f)) *
                         (1.0f - smoothstep(0.05f, 0.32f, hr));
    d += A.mark_amp * lung * (2.0f * blotch * (0.5f + near) + 0.8f * vessel);
  }

  // Ribs: posterior (curving down laterally) and anterior (sloping down medially), each
  // a periodic band pattern of a warped vertical coordinate, inside the rib cage.
  const float cage = std::min(b.lateral + 0.035f, std::min(b.top + 0.06f, b.bottom + 0.08f));
  if (cage > 0.0f && t > 0.02f) {
    const float cm = smoothstep(0.0f, 0.02f, cage);
    const float w = v - (A.rib_alpha * sq(t - 0.12f) + A.rib_beta * t);
    const float ph = w / A.rib_s0 * (1.0f - 0.2f * w) + L.rib_phase;
    d += A.rib_d * cm * smoothstep(0.02f, 0.06f, t) * rib_profile(frac(ph), A.rib_w);
    const float pa = (v + A.ant_gamma * t) / (1.15f * A.rib_s0) + L.ant_phase;
    d += A.ant_d * cm * smoothstep(0.10f, 0.18f, t) * rib_profile(frac(pa), 0.9f * A.rib_w);
  }
  if (A.clavicles) {
    const float cd = segment_distance(t, v, A.clav_t0, A.clav_v0, A.clav_t1, A.clav_v1);
    if (cd < A.clav_r) d += A.clav_d * std::sqrt(1.0f - sq(cd / A.clav_r));
  }
  *lung_out = lung;
  return d;
}

// ---------------------------------------------------------------- rendering passes

struct Pose {
  const Anatomy& A;
  int size;
  // Anatomical coordinates of pixel (x, y).
  void to_anatomy(int x, int y, float& u, float& v) const {
    const float inv = 1.0f / static_cast<float>(size);
    const float px = (static_cast<float>(x) + 0.5f) * inv - 0.5f - A.off_x;
    const float py = (static_cast<float>(y) + 0.5f) * inv - 0.5f - A.off_y;
    u = (A.cos_r * px + A.sin_r * py) * A.inv_scale;
    v = (-A.sin_r * px + A.cos_r * py) * A.inv_scale;
  }
  // Pixel coordinates (continuous) of anatomical point (u, v).
  void to_pixel(float u, float v, float& x, float& y) const {
    const float px = (A.cos_r * u - A.sin_r * v) / A.inv_scale + A.off_x;
    const float py = (A.sin_r * u + A.cos_r * v) / A.inv_scale + A.off_y;
    x = (px + 0.5f) * static_cast<float>(size) - 0.5f;
    y = (py + 0.5f) * static_cast<float>(size) - 0.5f;
  }
};

void render_density(const Pose& P, const Markings& M, float* D, float* lung) {
  const int S = P.size;
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      float u, v;
      P.to_anatomy(x, y, u, v);
      const size_t i = static_cast<size_t>(y) * S + x;
      D[i] = density_at(P.A, M, u, v, &lung[i]);
    }
}

struct Lobe {
  float u, v, inv_2s2, w;
};
struct Lesion {
  float contrast, radius, u, v;
  std::vector<Lobe> lobes;
};

// 1 to 3 consolidations with centres well inside a lung field and away from the heart.
std::vector<Lesion> sample_lesions(const Anatomy& A, Rng& r) {
  std::vector<Lesion> out(1 + r.below(3));
  for (Lesion& les : out) {
    // Contrast skewed toward visible lesions: u^0.5 puts ~1.5% below 0.08 and ~4% below 0.1.
    les.contrast = kSynthMinLesionContrast +
                   (kSynthMaxLesionContrast - kSynthMinLesionContrast) * std::pow(r.uniform(), 0.5f);
    les.radius = r.uniform(0.07f, 0.18f);
    les.u = -0.22f;  // fallback after 200 misses: middle of the image-left lung
    les.v = 0.0f;
    for (int tries = 0; tries < 200; ++tries) {
      const int side = static_cast<int>(r.below(2));
      const float t = r.uniform(0.08f, 0.42f), v = r.uniform(-0.34f, 0.26f);
      const float u = side == 0 ? -t : t;
      const float hu = u - A.heart_u, hv = v - A.heart_v;
      const float er = sq((A.heart_cos * hu + A.heart_sin * hv) / A.heart_a) +
                       sq((-A.heart_sin * hu + A.heart_cos * hv) / A.heart_b);
      if (lung_borders(A.lung[side], t, v).inside() > std::min(0.6f * les.radius, 0.05f) && er > 1.15f) {
        les.u = u;
        les.v = v;
        break;
      }
    }
    les.lobes.resize(3 + r.below(4));
    for (Lobe& lb : les.lobes) {
      const float ang = r.uniform(0.0f, 2.0f * kPi), dist = les.radius * r.uniform(0.0f, 0.7f);
      const float s = les.radius * r.uniform(0.3f, 0.6f);
      lb.u = les.u + dist * std::cos(ang);
      lb.v = les.v + dist * std::sin(ang);
      lb.inv_2s2 = 1.0f / (2.0f * s * s);
      lb.w = r.uniform(0.7f, 1.3f);
    }
  }
  return out;
}

// Adds the lesions' density to D and sets the mask where a lesion adds more than
// kSynthMaskThreshold of its contrast; both restricted to the lung fields. Where
// lesions overlap the densest wins (max, not sum), so no pixel gains more than the
// largest contrast.
void render_lesions(const Pose& P, const std::vector<Lesion>& lesions, const ValueNoise& tex, const float* lung,
                    float* D, float* mask) {
  const int S = P.size;
  std::vector<float> added(static_cast<size_t>(S) * S, 0.0f);
  for (const Lesion& les : lesions) {
    float cx, cy;
    P.to_pixel(les.u, les.v, cx, cy);
    const float reach = 2.8f * les.radius / P.A.inv_scale * static_cast<float>(S) + 2.0f;
    const int x0 = std::max(0, static_cast<int>(std::floor(cx - reach))), x1 = std::min(S - 1, static_cast<int>(std::ceil(cx + reach)));
    const int y0 = std::max(0, static_cast<int>(std::floor(cy - reach))), y1 = std::min(S - 1, static_cast<int>(std::ceil(cy + reach)));
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) {
        const size_t i = static_cast<size_t>(y) * S + x;
        if (lung[i] <= 0.0f) continue;
        float u, v;
        P.to_anatomy(x, y, u, v);
        float F = 0.0f;
        for (const Lobe& lb : les.lobes) F += lb.w * std::exp(-(sq(u - lb.u) + sq(v - lb.v)) * lb.inv_2s2);
        const float patch = 0.6f * tex.at(0.5f + 0.9f * u, 0.5f + 0.9f * v) + 0.4f * tex.at(0.5f + 0.45f * u, 0.5f + 0.45f * v);
        const float g = smoothstep(0.1f, 1.0f, F * (0.45f + 1.1f * patch)) * lung[i];
        added[i] = std::max(added[i], les.contrast * g);
        if (g >= kSynthMaskThreshold) mask[i] = 1.0f;
      }
  }
  for (size_t i = 0; i < added.size(); ++i) D[i] += added[i];
}

struct Exposure {
  float lo, hi, gamma, gain, gx, gy, noise, blur;
};

Exposure sample_exposure(Rng& r, int size) {
  Exposure e{};
  e.lo = r.uniform(0.0f, 0.06f);
  e.hi = r.uniform(0.82f, 1.0f);
  e.gamma = r.uniform(0.8f, 1.25f);
  e.gain = r.uniform(0.95f, 1.12f);
  e.gx = r.uniform(-0.06f, 0.06f);
  e.gy = r.uniform(-0.06f, 0.06f);
  e.noise = r.uniform(0.008f, 0.02f);
  // Blur sigma in pixels: about the same look at every size, never below half a pixel.
  e.blur = std::max(0.5f, r.uniform(0.5f, 1.0f) * static_cast<float>(size) / 256.0f);
  return e;
}

// Separable Gaussian blur with clamped edges, in place.
void gaussian_blur(float* img, int S, float sigma) {
  const int radius = std::max(1, static_cast<int>(std::ceil(2.5f * sigma)));
  std::vector<float> k(2 * radius + 1);
  float sum = 0.0f;
  for (int j = -radius; j <= radius; ++j) sum += k[j + radius] = std::exp(-0.5f * sq(j / sigma));
  for (float& w : k) w /= sum;
  std::vector<float> tmp(static_cast<size_t>(S) * S);
  for (int y = 0; y < S; ++y) {
    const float* row = img + static_cast<size_t>(y) * S;
    for (int x = 0; x < S; ++x) {
      float acc = 0.0f;
      for (int j = -radius; j <= radius; ++j) acc += k[j + radius] * row[std::clamp(x + j, 0, S - 1)];
      tmp[static_cast<size_t>(y) * S + x] = acc;
    }
  }
  for (int y = 0; y < S; ++y) {
    float* out = img + static_cast<size_t>(y) * S;
    for (int x = 0; x < S; ++x) out[x] = 0.0f;
    for (int j = -radius; j <= radius; ++j) {
      const float* row = tmp.data() + static_cast<size_t>(std::clamp(y + j, 0, S - 1)) * S;
      const float w = k[j + radius];
      for (int x = 0; x < S; ++x) out[x] += w * row[x];
    }
  }
}

// Density -> intensity (exposure curve and background gradient), blur, then
// quantum-like noise whose amplitude grows with the intensity.
void develop(const Exposure& e, Rng& noise_rng, int S, const float* D, float* out) {
  const float inv = 1.0f / static_cast<float>(S);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const size_t i = static_cast<size_t>(y) * S + x;
      const float px = (static_cast<float>(x) + 0.5f) * inv - 0.5f, py = (static_cast<float>(y) + 0.5f) * inv - 0.5f;
      out[i] = e.lo + (e.hi - e.lo) * std::pow(clamp01(e.gain * D[i]), e.gamma) + e.gx * px + e.gy * py;
    }
  gaussian_blur(out, S, e.blur);
  const size_t n = static_cast<size_t>(S) * S;
  for (size_t i = 0; i < n; i += 2) {
    float g0, g1;
    noise_rng.normal2(g0, g1);
    out[i] = clamp01(out[i] + e.noise * (0.5f + 0.5f * std::sqrt(clamp01(out[i]))) * g0);
    if (i + 1 < n) out[i + 1] = clamp01(out[i + 1] + e.noise * (0.5f + 0.5f * std::sqrt(clamp01(out[i + 1]))) * g1);
  }
}

// ---------------------------------------------------------------- files

// Removes the files an existing data set's manifest lists (only names this writer
// produces, so a foreign or edited manifest cannot delete anything else), the manifest
// and synth.json, and the writer's directories left empty.
void remove_previous_dataset(const fs::path& root, const fs::path& manifest) {
  static const std::regex kOurs(
      R"(((train|val|test)/(NORMAL|PNEUMONIA)|masks/(train|val|test))/(train|val|test)_[0-9]+\.png)");
  std::ifstream in(manifest);
  std::vector<std::string> victims;
  std::string line;
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string field;
    for (int col = 0; std::getline(ss, field, ','); ++col)
      if ((col == 0 || col == 3) && std::regex_match(field, kOurs)) victims.push_back(field);
  }
  std::error_code ec;
  fs::remove(manifest, ec);
  if (ec) throw FileError(cat(manifest.string(), ": cannot remove the previous manifest: ", ec.message()));
  fs::remove(root / "synth.json", ec);
  for (const std::string& v : victims) fs::remove(root / v, ec);
  // Then the directories this writer makes, where now empty (fs::remove leaves a
  // non-empty directory alone), so no stale empty class folder is left behind.
  for (const char* sp : {"train", "val", "test"}) {
    for (const char* cls : {"NORMAL", "PNEUMONIA"}) fs::remove(root / sp / cls, ec);
    fs::remove(root / sp, ec);
    fs::remove(root / "masks" / sp, ec);
  }
  fs::remove(root / "masks", ec);
}

void make_dir(const fs::path& p) {
  std::error_code ec;
  fs::create_directories(p, ec);
  if (ec) throw FileError(cat(p.string(), ": cannot create directory: ", ec.message()));
}

std::string manifest_text(const std::vector<SynthAssignment>& assign, bool masks) {
  std::string out = "path,label,split,mask\n";
  out.reserve(assign.size() * 72);
  for (size_t i = 0; i < assign.size(); ++i) {
    const SynthAssignment& a = assign[i];
    const int64_t idx = static_cast<int64_t>(i);
    out += synth_image_path(a, idx);
    out += ',';
    out += synth_class_name(a.pneumonia);
    out += ',';
    out += split_name(a.split);
    out += ',';
    if (masks && a.pneumonia) out += synth_mask_path(a, idx);
    out += '\n';
  }
  return out;
}

std::string summary_json(const SynthOptions& o, const SynthSummary& s) {
  nlohmann::ordered_json j;
  j["generator"] = "cxr synth";
  j["generator_version"] = kSynthGeneratorVersion;
  j["engine_version"] = CXR_VERSION_STRING;
  j["options"] = {{"size", o.size},
                  {"count", o.count},
                  {"pneumonia_fraction", o.pneumonia_fraction},
                  {"val_fraction", o.val_fraction},
                  {"test_fraction", o.test_fraction},
                  {"seed", o.seed},
                  {"masks", o.masks},
                  {"bit_depth", o.bit_depth}};
  auto short_float = [](float x) { return std::round(static_cast<double>(x) * 1e6) / 1e6; };  // 0.05, not 0.0500000007
  j["lesion_contrast"] = {short_float(kSynthMinLesionContrast), short_float(kSynthMaxLesionContrast)};
  j["mask_threshold"] = short_float(kSynthMaskThreshold);
  j["classes"] = {"NORMAL", "PNEUMONIA"};
  nlohmann::ordered_json counts;
  for (Split sp : {Split::train, Split::val, Split::test})
    counts[split_name(sp)] = {{"NORMAL", s.count(sp, false)}, {"PNEUMONIA", s.count(sp, true)}};
  j["counts"] = counts;
  j["total"] = s.total;
  j["masks"] = s.masks;
  return j.dump(2) + "\n";
}

std::string index_name(const SynthAssignment& a, int64_t index) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s_%06lld.png", split_name(a.split), static_cast<long long>(index));
  return buf;
}

}  // namespace

// ---------------------------------------------------------------- public API

void SynthOptions::validate() const {
  auto bad = [](const char* field, auto value, const char* want) {
    throw ValueError(cat("SynthOptions: ", field, " must be ", want, ", got ", value));
  };
  if (size < kSynthMinSize || size > kSynthMaxSize) bad("size", size, "in [16, 4096]");
  if (count < 1 || count > kSynthMaxCount) bad("count", count, "in [1, 100000000]");
  if (!(pneumonia_fraction >= 0.0 && pneumonia_fraction <= 1.0)) bad("pneumonia_fraction", pneumonia_fraction, "in [0, 1]");
  if (!(val_fraction >= 0.0 && val_fraction < 1.0)) bad("val_fraction", val_fraction, "in [0, 1)");
  if (!(test_fraction >= 0.0 && test_fraction < 1.0)) bad("test_fraction", test_fraction, "in [0, 1)");
  if (!(val_fraction + test_fraction < 1.0))
    bad("val_fraction + test_fraction", val_fraction + test_fraction, "below 1 (some images must stay in train)");
  if (bit_depth != 8 && bit_depth != 16) bad("bit_depth", bit_depth, "8 or 16");
  if (threads < 0 || threads > 1024) bad("threads", threads, "in [0, 1024] (0: all cores)");
}

const char* split_name(Split s) {
  switch (s) {
    case Split::train: return "train";
    case Split::val: return "val";
    case Split::test: return "test";
  }
  return "?";
}

int64_t SynthSummary::class_total(bool pneumonia) const {
  int64_t n = 0;
  for (const auto& row : counts) n += row[pneumonia ? 1 : 0];
  return n;
}

std::string synth_image_path(const SynthAssignment& a, int64_t index) {
  return cat(split_name(a.split), "/", synth_class_name(a.pneumonia), "/", index_name(a, index));
}

std::string synth_mask_path(const SynthAssignment& a, int64_t index) {
  return cat("masks/", split_name(a.split), "/", index_name(a, index));
}

SynthImage synth_xray(int size, uint64_t seed, int64_t index, bool pneumonia) {
  CXR_CHECK(size >= kSynthMinSize && size <= kSynthMaxSize, "synth_xray: size must be in [16, 4096], got ", size);
  CXR_CHECK(index >= 0 && index < (int64_t(1) << kIndexBits), "synth_xray: index must be in [0, 2^48), got ", index);
  Rng anatomy_rng(seed, index, Stream::anatomy), exposure_rng(seed, index, Stream::exposure);
  Rng noise_rng(seed, index, Stream::noise), marks_rng(seed, index, Stream::markings);
  const Anatomy A = sample_anatomy(anatomy_rng);
  const Exposure E = sample_exposure(exposure_rng, size);
  const Markings M{ValueNoise(14, 14, marks_rng), ValueNoise(48, 1, marks_rng)};
  const Pose P{A, size};

  const size_t n = static_cast<size_t>(size) * size;
  std::vector<float> D(n), lung(n);
  render_density(P, M, D.data(), lung.data());

  SynthImage out;
  out.pneumonia = pneumonia;
  out.image = Image(1, size, size);
  out.mask = Image(1, size, size, 0.0f);
  if (pneumonia) {
    Rng lesion_rng(seed, index, Stream::lesion), texture_rng(seed, index, Stream::lesion_texture);
    const std::vector<Lesion> lesions = sample_lesions(A, lesion_rng);
    const ValueNoise tex(32, 32, texture_rng);
    render_lesions(P, lesions, tex, lung.data(), D.data(), out.mask.data.data());
    for (const Lesion& l : lesions) out.lesion_contrast.push_back(l.contrast);
  }
  develop(E, noise_rng, size, D.data(), out.image.data.data());
  return out;
}

std::vector<SynthAssignment> synth_assignments(const SynthOptions& opts) {
  opts.validate();
  const int64_t n = opts.count;
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t(0));
  Rng r(opts.seed, 0, Stream::assign);
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[r.below(static_cast<uint64_t>(i) + 1)]);

  std::vector<SynthAssignment> out(static_cast<size_t>(n));
  const int64_t n_pneu = std::llround(static_cast<double>(n) * opts.pneumonia_fraction);
  // perm[begin, end) is one class, in shuffled order: val first, then test, then train.
  auto assign_class = [&](int64_t begin, int64_t end, bool pneumonia) {
    const int64_t nc = end - begin;
    const int64_t n_val = std::llround(static_cast<double>(nc) * opts.val_fraction);
    const int64_t n_test = std::llround(static_cast<double>(nc) * opts.test_fraction);
    for (int64_t k = 0; k < nc; ++k) {
      SynthAssignment& a = out[static_cast<size_t>(perm[begin + k])];
      a.pneumonia = pneumonia;
      a.split = k < n_val ? Split::val : k < n_val + n_test ? Split::test : Split::train;
    }
  };
  assign_class(0, n_pneu, true);
  assign_class(n_pneu, n, false);
  return out;
}

SynthSummary write_synthetic_dataset(const std::string& out_dir, const SynthOptions& opts,
                                     const std::function<void(int64_t, int64_t)>& progress) {
  opts.validate();
  const auto t0 = std::chrono::steady_clock::now();
  CXR_CHECK(!out_dir.empty(), "write_synthetic_dataset: the output directory is empty");
  const fs::path root(out_dir);
  std::error_code ec;
  if (fs::exists(root, ec) && !fs::is_directory(root, ec))
    throw FileError(cat(out_dir, ": exists and is not a directory"));
  const fs::path manifest = root / "manifest.csv";
  if (fs::exists(manifest, ec)) {
    if (!opts.overwrite)
      throw ValueError(cat(out_dir, " already holds a data set (", manifest.string(),
                           " exists); choose another directory or pass overwrite (cxr synth --overwrite) to replace it"));
    remove_previous_dataset(root, manifest);
  }

  const std::vector<SynthAssignment> assign = synth_assignments(opts);
  SynthSummary summary;
  summary.out_dir = out_dir;
  summary.total = opts.count;
  for (const SynthAssignment& a : assign) ++summary.counts[static_cast<int>(a.split)][a.pneumonia ? 1 : 0];
  for (Split sp : {Split::train, Split::val, Split::test})
    for (bool p : {false, true})
      if (summary.count(sp, p) > 0) {
        make_dir(root / split_name(sp) / synth_class_name(p));
        if (p && opts.masks) make_dir(root / "masks" / split_name(sp));
      }

  // Workers take indices from a shared counter; the calling thread reports progress.
  const int64_t total = opts.count;
  // By default two workers per hardware thread: each PNG write waits on fsync, and the
  // extra workers keep the cores rendering meanwhile.
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int nthreads = static_cast<int>(std::min<int64_t>(opts.threads > 0 ? opts.threads : 2 * hw, total));
  std::atomic<int64_t> next{0}, done{0}, masks_written{0};
  std::atomic<bool> stop{false};
  std::exception_ptr error;
  std::mutex mu;
  std::condition_variable cv;
  auto work = [&] {
    for (;;) {
      const int64_t i = next.fetch_add(1);
      if (i >= total || stop.load()) return;
      try {
        const SynthAssignment& a = assign[static_cast<size_t>(i)];
        const SynthImage img = synth_xray(opts.size, opts.seed, i, a.pneumonia);
        write_png((root / synth_image_path(a, i)).string(), img.image, opts.bit_depth);
        if (a.pneumonia && opts.masks) {
          write_png((root / synth_mask_path(a, i)).string(), img.mask, 8);
          masks_written.fetch_add(1);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!error) error = std::current_exception();
        stop.store(true);
        cv.notify_all();
        return;
      }
      if (done.fetch_add(1) + 1 == total) {
        std::lock_guard<std::mutex> lk(mu);
        cv.notify_all();
      }
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(nthreads));
  auto join_all = [&] {
    stop.store(true);
    for (std::thread& th : workers) th.join();
    workers.clear();
  };
  try {
    for (int k = 0; k < nthreads; ++k) workers.emplace_back(work);
    std::unique_lock<std::mutex> lk(mu);
    while (!cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return done.load() == total || stop.load(); })) {
      if (progress) {
        lk.unlock();
        progress(done.load(), total);
        lk.lock();
      }
    }
  } catch (...) {
    join_all();
    throw;
  }
  join_all();
  if (error) std::rethrow_exception(error);

  summary.masks = masks_written.load();
  write_file_atomic(manifest.string(), manifest_text(assign, opts.masks));
  write_file_atomic((root / "synth.json").string(), summary_json(opts, summary));
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (progress) progress(total, total);
  return summary;
}

}  // namespace cxr::data
