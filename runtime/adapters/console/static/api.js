// The admin API with the bearer token. The token lives in sessionStorage (this tab only) and travels in the
// Authorization header; it is never put in a URL.
const KEY = "nuviot-admin-token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function headers(extra = {}) {
  return { Authorization: `Bearer ${token.get() || ""}`, ...extra };
}

// fetch a JSON endpoint; throws ApiError with the API's {error:{code,message}}.
export async function api(method, path, body, { raw = false } = {}) {
  const init = { method, headers: headers(), cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) {
    const err = data && data.error ? data.error : { code: `http_${resp.status}`, message: String(text).slice(0, 200) };
    throw new ApiError(resp.status, err.code, err.message);
  }
  return raw ? { data, resp } : data;
}
