// The error every keygate API call fails with. Its own module so that api.js, passkey.js and
// stepup.js can all use it without importing each other.

export class ApiError extends Error {
  constructor(message, { status = 0, code = null, type = null, param = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.type = type;
    this.param = param;
  }
}
