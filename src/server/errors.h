// What an exception thrown while serving a request answers (docs/protocol.md,
// "Errors"): one place for the status and code, used both for the usual JSON
// error answers and for the error frame that ends a streamed answer after its
// 200 was sent.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace aerials::server {

// An answer other than 200, with its error code and extra fields (the map).
class HttpError : public std::runtime_error {
public:
    HttpError(int status, std::string code, const std::string& message,
              nlohmann::json extra = nlohmann::json::object())
        : std::runtime_error(message), status(status), code(std::move(code)), extra(std::move(extra)) {}
    int status;
    std::string code;
    nlohmann::json extra;
};

struct ErrorAnswer {
    int status = 500;
    std::string code = "internal";
    std::string message;
    nlohmann::json extra = nlohmann::json::object();
};

// Classifies the exception `error` (which must not be null).
ErrorAnswer error_answer(std::exception_ptr error);

}  // namespace aerials::server
