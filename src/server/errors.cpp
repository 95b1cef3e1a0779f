#include "server/errors.h"

#include "cluster/wire_values.h"
#include "server/cluster_state.h"
#include "server/local_store.h"
#include "sqlite/error.h"

namespace aerials::server {

ErrorAnswer error_answer(std::exception_ptr error) {
    auto answer = [](int status, const char* code, const std::string& message) {
        ErrorAnswer a;
        a.status = status;
        a.code = code;
        a.message = message;
        return a;
    };
    try {
        std::rethrow_exception(error);
    } catch (const HttpError& e) {
        ErrorAnswer a = answer(e.status, "", e.what());
        a.code = e.code;
        a.extra = e.extra;
        return a;
    } catch (const cluster::WireError& e) {
        return answer(400, "bad_request", e.what());
    } catch (const UnknownCollection& e) {
        return answer(404, "not_found", e.what());
    } catch (const JoinRefused& e) {
        return answer(409, "join_refused", e.what());
    } catch (const sqlite::Error& e) {
        switch (e.primary_code()) {
            case SQLITE_CONSTRAINT: return answer(409, "constraint", e.what());
            case SQLITE_BUSY:
            case SQLITE_LOCKED: return answer(503, "busy", e.what());
            default: return answer(500, "internal", e.what());
        }
    } catch (const std::invalid_argument& e) {
        return answer(400, "bad_request", e.what());
    } catch (const std::exception& e) {
        return answer(500, "internal", e.what());
    } catch (...) {
        return answer(500, "internal", "an unknown exception");
    }
}

}  // namespace aerials::server
