// The server's JSON API: every failure becomes an ApiError carrying the server's message.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function parse(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`${response.status} ${response.statusText}`, response.status);
  }
  if (!response.ok) {
    throw new ApiError(body.error || `${response.status} ${response.statusText}`, response.status);
  }
  return body;
}

export async function getJSON(path) {
  return parse(await fetch(path));
}

// POST form fields (strings, numbers or a File) as multipart/form-data.
export async function postForm(path, fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null) form.append(name, value);
  }
  return parse(await fetch(path, { method: "POST", body: form }));
}
