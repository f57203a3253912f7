// A two-way binding between a Y.Text and a <textarea>: local input becomes
// the smallest delete + insert on the Y.Text, remote changes are applied to
// the textarea with the local selection moved along with the text.

const LOCAL = Symbol('textarea')

/** Line and column (zero-based) of a UTF-16 offset in `text`. */
export function lineColumn(text, offset) {
  let line = 0
  let lineStart = 0
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++
    lineStart = i + 1
  }
  return { line, column: offset - lineStart }
}

/** The UTF-16 offset of a line and column in `text`, clamped to the text. */
export function offsetOf(text, { line, column }) {
  let start = 0
  for (let l = 0; l < line; l++) {
    const next = text.indexOf('\n', start)
    if (next === -1) return text.length
    start = next + 1
  }
  const end = text.indexOf('\n', start)
  const lineLength = (end === -1 ? text.length : end) - start
  return start + Math.min(column, lineLength)
}

/**
 * @param {import('yjs').Text} ytext
 * @param {HTMLTextAreaElement} textarea
 * @param {{ onRemoteChange?: () => void }} [hooks]
 * @returns {() => void} unbind
 */
export function bindTextarea(ytext, textarea, hooks = {}) {
  let value = ytext.toString()
  textarea.value = value

  const onInput = () => {
    const next = textarea.value
    const prev = value
    if (next === prev) return
    let start = 0
    while (start < prev.length && start < next.length && prev[start] === next[start]) start++
    if (next.length > prev.length) {
      // Typing "a" into "aa" is ambiguous; the caret says where it happened.
      start = Math.min(start, Math.max(0, textarea.selectionEnd - (next.length - prev.length)))
    }
    let endPrev = prev.length
    let endNext = next.length
    while (endPrev > start && endNext > start && prev[endPrev - 1] === next[endNext - 1]) {
      endPrev--
      endNext--
    }
    value = next
    ytext.doc.transact(() => {
      if (endPrev > start) ytext.delete(start, endPrev - start)
      if (endNext > start) ytext.insert(start, next.slice(start, endNext))
    }, LOCAL)
  }

  const onChange = (event, transaction) => {
    if (transaction.origin === LOCAL) return
    let { selectionStart: start, selectionEnd: end } = textarea
    const direction = textarea.selectionDirection
    const focused = document.activeElement === textarea
    let index = 0
    for (const op of event.delta) {
      if (op.retain !== undefined) {
        index += op.retain
      } else if (op.insert !== undefined) {
        const n = typeof op.insert === 'string' ? op.insert.length : 1
        if (index < start) start += n
        if (index < end) end += n
        index += n
      } else if (op.delete !== undefined) {
        const n = op.delete
        if (start > index) start = index + Math.max(0, start - index - n)
        if (end > index) end = index + Math.max(0, end - index - n)
      }
    }
    value = ytext.toString()
    const scrollTop = textarea.scrollTop
    textarea.value = value
    textarea.scrollTop = scrollTop
    if (focused) textarea.setSelectionRange(start, end, direction)
    else textarea.setSelectionRange(start, end)
    hooks.onRemoteChange?.()
  }

  textarea.addEventListener('input', onInput)
  ytext.observe(onChange)
  return () => {
    textarea.removeEventListener('input', onInput)
    ytext.unobserve(onChange)
  }
}

/**
 * Pixel position (relative to the textarea's padding box, scroll applied)
 * of the caret at `offset`, measured with an invisible mirror element.
 */
export function caretPosition(textarea, offset) {
  let mirror = caretPosition.mirror
  if (!mirror) {
    mirror = caretPosition.mirror = document.createElement('div')
    mirror.setAttribute('aria-hidden', 'true')
    document.body.appendChild(mirror)
  }
  const style = getComputedStyle(textarea)
  const copy = [
    'boxSizing', 'width', 'paddingTop', 'paddingRight', 'paddingBottom', 'paddingLeft',
    'borderTopWidth', 'borderRightWidth', 'borderBottomWidth', 'borderLeftWidth',
    'fontFamily', 'fontSize', 'fontWeight', 'fontStyle', 'lineHeight', 'letterSpacing',
    'tabSize', 'textTransform', 'wordSpacing', 'textIndent',
  ]
  for (const property of copy) mirror.style[property] = style[property]
  Object.assign(mirror.style, {
    position: 'absolute', visibility: 'hidden', top: '0', left: '-9999px', overflow: 'hidden',
    whiteSpace: 'pre-wrap', overflowWrap: 'break-word', height: 'auto',
  })
  // The textarea's content box is narrower than its width when it shows a scrollbar.
  mirror.style.width = `${textarea.clientWidth + parseFloat(style.borderLeftWidth) + parseFloat(style.borderRightWidth)}px`
  mirror.textContent = textarea.value.slice(0, offset)
  const marker = document.createElement('span')
  marker.textContent = textarea.value.slice(offset) || '.'
  mirror.appendChild(marker)
  const lineHeight = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.2
  return {
    top: marker.offsetTop - textarea.scrollTop,
    left: marker.offsetLeft - textarea.scrollLeft,
    height: lineHeight,
  }
}
