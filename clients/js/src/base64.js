// Standard base64 with padding (the alphabet the protocol requires), for
// browsers and Node alike. Encoded in chunks: spreading a large array into
// String.fromCharCode overflows the stack.

const CHUNK = 0x8000

/** @param {Uint8Array} bytes */
export function toBase64(bytes) {
  let binary = ''
  for (let i = 0; i < bytes.length; i += CHUNK) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK))
  }
  return btoa(binary)
}

/** @param {string} text */
export function fromBase64(text) {
  const binary = atob(text)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}
