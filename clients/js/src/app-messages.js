// App messages (broadcast, send_to_user): argument checks and the errors
// their promises reject with.

/** @internal The event of an app message: a string (its length and characters are the server's to check). */
export function checkEvent(event) {
  if (typeof event !== 'string') throw new TypeError('event must be a string (1-64 bytes)')
}

/** An Error carrying the fields of a TandemError (code, id, document_id, request). */
export function requestError(fields) {
  const { message, ...rest } = fields
  return Object.assign(new Error(`${fields.request} failed: ${fields.code}: ${message}`), rest)
}

/** A rejected promise that is never an unhandled rejection. */
export function rejected(fields) {
  const promise = Promise.reject(requestError(fields))
  promise.catch(() => {})
  return promise
}
