// JSON pieces the evaluators' reports share. Internal to eval/: it includes nlohmann/json, which
// the public headers keep out (their reports are JSON text) so that callers need no JSON library.
#ifndef DARTSERVE_EVAL_REPORT_JSON_H_
#define DARTSERVE_EVAL_REPORT_JSON_H_

#include "eval/shape_analysis.h"
#include "nlohmann/json.hpp"

namespace dartserve::eval::internal {

// {"shape", "color", "size", "position" (names), "area"}; prompt_eval.cc reads it back.
nlohmann::json SeenObjectToJson(const SeenObject& object);

}  // namespace dartserve::eval::internal

#endif  // DARTSERVE_EVAL_REPORT_JSON_H_
