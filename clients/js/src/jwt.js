// Reading (never verifying) a JWT's payload: the client only needs `exp` to
// know when to refresh, and `role` to know whether it may write.

/**
 * The payload of a JWT, or null for anything that is not one (an API key
 * such as `tk_...`, a malformed string).
 * @param {string} token
 * @returns {Record<string, unknown> | null}
 */
export function decodeJwtPayload(token) {
  if (typeof token !== 'string') return null
  const parts = token.split('.')
  if (parts.length !== 3) return null
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/')
    while (b64.length % 4) b64 += '='
    const binary = atob(b64)
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0))
    const payload = JSON.parse(new TextDecoder().decode(bytes))
    return payload && typeof payload === 'object' ? payload : null
  } catch {
    return null
  }
}

/**
 * `exp` and `iat` in milliseconds since the epoch (null when absent).
 * @param {string} token
 */
export function tokenTimes(token) {
  const payload = decodeJwtPayload(token)
  const ms = (v) => (typeof v === 'number' && Number.isFinite(v) ? v * 1000 : null)
  return { exp: ms(payload?.exp), iat: ms(payload?.iat), role: typeof payload?.role === 'string' ? payload.role : null }
}
