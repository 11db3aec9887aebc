"""Functions: register (``POST /v3/functions``), get and delete (``/v2/functions/{id}``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from volley.protocol.codes import ApiCode
from volley.protocol.topology import MAX_PAYLOAD_SIZE
from volley.service.errors import COMMON_RESPONSES, ApiError, ErrorBody
from volley.service.models import Function
from volley.service.payloads import MalformedPayload, check_frames, source_to_function_code
from volley.service.routes.common import Caller, caller, check_quota, invalid, owned
from volley.service.schemas import FunctionBody, FunctionDeleted, FunctionDoc, FunctionRegistered

router = APIRouter(tags=["functions"], responses=COMMON_RESPONSES)


@router.post("/v3/functions", responses={403: {"model": ErrorBody, "description": "quota exceeded"}})
def register_function(body: FunctionBody, c: Caller = Depends(caller)) -> FunctionRegistered:
    check_quota(c, Function, "functions", "max_functions_per_user")
    code = body.function_code
    if len(code) > MAX_PAYLOAD_SIZE:
        raise ApiError(413, ApiCode.PAYLOAD_TOO_LARGE, "function code exceeds the 10 MiB limit")
    if body.serialized:
        try:
            check_frames(code, 1, "function_code")
        except MalformedPayload as exc:
            raise invalid(str(exc)) from None
    else:
        if not body.function_name.isidentifier():
            raise invalid("function_name must be a Python identifier when function_code is source")
        code = source_to_function_code(body.function_name, code)
    fn = Function(
        owner_id=c.user_id, name=body.function_name, code=code, description=body.description,
        meta=body.meta, public=body.public,
    )
    c.session.add(fn)
    c.session.commit()
    return {"function_uuid": fn.id}


@router.get("/v2/functions/{function_id}")
def get_function(function_id: str, c: Caller = Depends(caller)) -> FunctionDoc:
    fn = owned(c, Function, function_id, "function", public_ok=True)
    return {
        "function_uuid": fn.id, "function_name": fn.name, "function_code": fn.code,
        "description": fn.description, "meta": fn.meta, "public": fn.public,
    }


@router.delete("/v2/functions/{function_id}")
def delete_function(function_id: str, c: Caller = Depends(caller)) -> FunctionDeleted:
    fn = owned(c, Function, function_id, "function")
    c.session.delete(fn)
    c.session.commit()
    return {"result": 302, "function_uuid": fn.id}
