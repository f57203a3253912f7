document.body.insertAdjacentHTML("beforeend", "<p>demo bundle missing</p>");
