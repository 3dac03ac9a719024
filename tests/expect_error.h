// Shared test assertion: f must throw cxr::Error whose message contains every one of
// `parts`.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "runtime/error.h"

namespace cxr {

template <typename F>
void expect_error(F&& f, std::initializer_list<const char*> parts) {
  try {
    f();
    ADD_FAILURE() << "expected cxr::Error, nothing was thrown";
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const char* p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected cxr::Error, got another exception: " << e.what();
  } catch (...) {
    ADD_FAILURE() << "expected cxr::Error, got a non-std exception";
  }
}

}  // namespace cxr
