/*
 * app.js - Tessera's page: upload (drop, picker, paste), share snippets,
 * delete with the token kept in localStorage, gallery, image page.
 *
 * Everything from the server goes to the DOM through textContent, attribute
 * values or <img src>; nothing is ever parsed as HTML. No other origin is
 * contacted but the ones the API's URLs name (images on a CDN).
 */
'use strict';

(function () {
  const API = '/api/v1/images';
  const STORE = 'tessera.tokens';
  const PAGE = 24;

  const $ = (id) => document.getElementById(id);

  /* --- delete tokens: {id: token} in localStorage --- */

  function tokens() {
    try {
      const t = JSON.parse(localStorage.getItem(STORE) || '{}');
      return t && typeof t === 'object' ? t : {};
    } catch (e) {
      return {};
    }
  }
  function tokenOf(id) {
    return Object.prototype.hasOwnProperty.call(tokens(), id) ? tokens()[id] : null;
  }
  function tokenSet(id, token) {
    const t = tokens();
    if (token === null) delete t[id];
    else t[id] = token;
    try {
      localStorage.setItem(STORE, JSON.stringify(t));
    } catch (e) {
      /* storage full or disabled: the token is shown once, the uploader can note it */
    }
  }

  /* --- small DOM helpers --- */

  function el(tag, props, children) {
    const e = document.createElement(tag);
    for (const k in props || {}) {
      if (k === 'text') e.textContent = props[k];
      else if (k === 'class') e.className = props[k];
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), props[k]);
      else e.setAttribute(k, props[k]);
    }
    for (const c of children || []) e.appendChild(c);
    return e;
  }

  function pageUrl(id) {
    return location.origin + location.pathname + '#/i/' + encodeURIComponent(id);
  }

  function humanBytes(n) {
    const u = ['bytes', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + u[i];
  }

  function apiMessage(status, text) {
    try {
      const j = JSON.parse(text);
      if (j && j.error && typeof j.error.message === 'string') return j.error.message;
    } catch (e) {
      /* not JSON: a proxy's page */
    }
    return status ? 'the server answered ' + status : 'the server could not be reached';
  }

  async function copy(text, button) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (e) {
      const ta = el('textarea', { class: 'visually-hidden' });
      ta.value = text;
      document.body.appendChild(ta);
      ta.select();
      try {
        ok = document.execCommand('copy');
      } catch (e2) {
        ok = false;
      }
      ta.remove();
    }
    const was = button.dataset.label || button.textContent;
    button.dataset.label = was;
    button.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => { button.textContent = was; }, 1500);
  }

  let uid = 0;
  /* shareRows fills box with labelled read-only fields and copy buttons for img. */
  function shareRows(box, img) {
    const page = pageUrl(img.id);
    const rows = [
      ['Page', page, 'page'],
      ['Direct link', img.url, 'direct'],
      ['Markdown', '[![image](' + img.url + ')](' + page + ')', 'markdown'],
      ['HTML', '<a href="' + page + '"><img src="' + img.url + '" alt=""></a>', 'html'],
      ['BBCode', '[url=' + page + '][img]' + img.url + '[/img][/url]', 'bbcode'],
    ];
    // srcset: signed w:{width}.auto renditions, present while the server has a transform key
    if (img.srcset) {
      rows.push(['Responsive HTML', '<img src="' + img.url + '" srcset="' + img.srcset +
        '" sizes="100vw" alt="">', 'srcset']);
    }
    box.textContent = '';
    for (const [label, value, kind] of rows) {
      const id = 'share-' + ++uid;
      const input = el('input', { id: id, type: 'text', readonly: '', class: 'share-' + kind });
      input.value = value;
      input.addEventListener('focus', () => input.select());
      const btn = el('button', { type: 'button', class: 'secondary', text: 'Copy',
        'aria-label': 'Copy ' + label.toLowerCase() });
      btn.addEventListener('click', () => copy(value, btn));
      box.appendChild(el('div', { class: 'share-row' }, [el('label', { for: id, text: label }), input, btn]));
    }
  }

  /* --- delete --- */

  async function remove(id) {
    const token = tokenOf(id);
    if (token === null) return 'no delete token for this image in this browser';
    let res;
    try {
      res = await fetch(API + '/' + encodeURIComponent(id), {
        method: 'DELETE', headers: { 'X-Delete-Token': token }, cache: 'no-store',
      });
    } catch (e) {
      return 'the server could not be reached';
    }
    if (res.status === 204 || res.status === 404) {
      tokenSet(id, null);
      return null;
    }
    return apiMessage(res.status, await res.text());
  }

  /* deleteButton makes a button that deletes id after a confirmation, then runs done(). */
  function deleteButton(id, note, done) {
    const btn = el('button', { type: 'button', class: 'danger', text: 'Delete',
      'aria-label': 'Delete image ' + id });
    btn.addEventListener('click', async () => {
      if (!confirm('Delete this image for everyone? This cannot be undone.')) return;
      btn.disabled = true;
      const err = await remove(id);
      if (err) {
        btn.disabled = false;
        note.textContent = 'Not deleted: ' + err;
        return;
      }
      note.textContent = 'Deleted.';
      done();
    });
    return btn;
  }

  /* --- upload --- */

  const results = $('results');
  const tpl = $('tpl-result');

  function uploadOne(file) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    const q = (c) => li.querySelector(c);
    q('.result-name').textContent = file.name || 'pasted image';
    q('.result-state').textContent = 'uploading';
    const bar = q('.result-progress');
    bar.setAttribute('aria-label', 'Upload of ' + (file.name || 'pasted image'));
    results.prepend(li);

    const form = new FormData();
    form.append('file', file, file.name || 'pasted');
    const xhr = new XMLHttpRequest();
    xhr.open('POST', API);
    xhr.responseType = 'text';
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
    });
    const fail = (msg) => {
      li.classList.add('error', 'done');
      q('.result-state').textContent = 'rejected';
      const p = q('.result-error');
      p.textContent = msg;
      p.hidden = false;
      $('upload-status').textContent = (file.name || 'image') + ': ' + msg;
    };
    xhr.addEventListener('load', () => {
      let img = null;
      if (xhr.status === 201) {
        try {
          img = JSON.parse(xhr.responseText);
        } catch (e) {
          img = null;
        }
      }
      if (!img || typeof img.id !== 'string') {
        fail(apiMessage(xhr.status, xhr.responseText));
        return;
      }
      if (typeof img.delete_token === 'string') tokenSet(img.id, img.delete_token);
      li.classList.add('ok', 'done');
      li.dataset.id = img.id;
      q('.result-state').textContent = 'uploaded';
      const thumb = q('.result-thumb');
      thumb.href = '#/i/' + encodeURIComponent(img.id);
      thumb.setAttribute('aria-label', 'Open the page of ' + (file.name || 'the image'));
      thumb.querySelector('img').src = (img.variants && img.variants.thumb) || img.url;
      shareRows(q('.share'), img);
      const note = el('span', { class: 'deleted-note', role: 'status' });
      const actions = q('.actions');
      actions.appendChild(el('a', { href: '#/i/' + encodeURIComponent(img.id), text: 'Open page' }));
      actions.appendChild(deleteButton(img.id, note, () => {
        li.classList.add('deleted');
        q('.result-body').hidden = true;
        q('.result-state').textContent = 'deleted';
      }));
      actions.appendChild(note);
      q('.result-body').hidden = false;
      $('upload-status').textContent = (file.name || 'image') + ' uploaded';
    });
    xhr.addEventListener('error', () => fail('the server could not be reached'));
    xhr.addEventListener('abort', () => fail('the upload was cancelled'));
    xhr.send(form);
  }

  function uploadAll(files) {
    for (const f of files) uploadOne(f);
  }

  const drop = $('drop');
  const input = $('file');
  input.addEventListener('change', () => {
    uploadAll(Array.from(input.files));
    input.value = '';
  });
  ['dragenter', 'dragover'].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.add('over');
  }));
  ['dragleave', 'drop'].forEach((t) => drop.addEventListener(t, () => drop.classList.remove('over')));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) uploadAll(Array.from(e.dataTransfer.files));
  });
  /* a file dropped outside the zone must not navigate away from the page */
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
  document.addEventListener('paste', (e) => {
    const files = e.clipboardData ? Array.from(e.clipboardData.files) : [];
    if (files.length === 0) return;
    e.preventDefault();
    show('upload');
    if (location.hash !== '' && location.hash !== '#/') location.hash = '#/';
    uploadAll(files);
  });

  /* --- gallery --- */

  const gallery = $('gallery');
  const galleryNext = $('gallery-next');
  const gstate = { cursor: null, done: false, loading: false, started: false };

  function galleryItem(img) {
    const li = el('li', { 'data-id': img.id });
    const thumb = el('img', { alt: img.format + ' image, ' + img.width + '×' + img.height, loading: 'lazy' });
    thumb.src = (img.variants && img.variants.thumb) || img.url;
    li.appendChild(el('a', { href: '#/i/' + encodeURIComponent(img.id), 'aria-label': 'Image ' + img.id }, [thumb]));
    const cap = el('div', { class: 'caption' }, [el('span', { text: img.width + '×' + img.height + ' ' + img.format })]);
    if (tokenOf(img.id) !== null) {
      const note = el('span', { class: 'visually-hidden', role: 'status' });
      cap.appendChild(deleteButton(img.id, note, () => {
        li.remove();
        $('gallery-status').textContent = 'Image deleted.';
      }));
      cap.appendChild(note);
    }
    li.appendChild(cap);
    return li;
  }

  async function galleryLoad() {
    if (gstate.loading || gstate.done) return;
    gstate.loading = true;
    const status = $('gallery-status');
    let url = API + '?limit=' + PAGE;
    if (gstate.cursor) url += '&cursor=' + encodeURIComponent(gstate.cursor);
    try {
      const res = await fetch(url, { cache: 'no-store' });
      const text = await res.text();
      if (!res.ok) throw new Error(apiMessage(res.status, text));
      const page = JSON.parse(text);
      for (const img of page.items) gallery.appendChild(galleryItem(img));
      gstate.cursor = page.next_cursor;
      gstate.done = !page.next_cursor;
      status.textContent = gallery.children.length === 0 ? 'No images yet.' : '';
    } catch (e) {
      status.textContent = 'Could not load the gallery: ' + e.message;
    }
    gstate.loading = false;
    galleryNext.hidden = gstate.done;
    if (!gstate.done) maybeMore();
  }

  function galleryReset() {
    gallery.textContent = '';
    gstate.cursor = null;
    gstate.done = false;
    gstate.started = true;
    galleryLoad();
  }

  /* infinite scroll: load the next page while the sentinel is in view */
  const sentinel = $('gallery-more');
  let sentinelVisible = false;
  function maybeMore() {
    if (sentinelVisible && !$('view-gallery').hidden) galleryLoad();
  }
  if ('IntersectionObserver' in window) {
    new IntersectionObserver((entries) => {
      sentinelVisible = entries.some((e) => e.isIntersecting);
      maybeMore();
    }, { rootMargin: '400px' }).observe(sentinel);
  }
  galleryNext.addEventListener('click', galleryLoad);

  /* --- image page --- */

  async function imageShow(id) {
    const status = $('image-status');
    const body = $('image-body');
    body.hidden = true;
    status.textContent = 'Loading…';
    $('image-title').textContent = 'Image ' + id;
    let res, text;
    try {
      res = await fetch(API + '/' + encodeURIComponent(id), { cache: 'no-store' });
      text = await res.text();
    } catch (e) {
      status.textContent = 'The server could not be reached.';
      return;
    }
    if (!res.ok) {
      status.textContent = res.status === 404 ? 'No such image (deleted, or never uploaded).' : apiMessage(res.status, text);
      return;
    }
    const img = JSON.parse(text);
    status.textContent = '';
    const pic = $('image-img');
    pic.src = img.url;
    pic.alt = img.format + ' image, ' + img.width + ' by ' + img.height + ' pixels';
    pic.width = img.width;
    pic.height = img.height;
    $('image-link').href = img.url;
    const meta = $('image-meta');
    meta.textContent = '';
    const rows = [
      ['ID', img.id],
      ['Format', img.format + ' (' + img.content_type + ')'],
      ['Size', img.width + ' × ' + img.height + ' pixels'],
      ['Frames', String(img.frames)],
      ['Bytes', humanBytes(img.bytes) + ' (' + img.bytes + ')'],
      ['Uploaded', new Date(img.created_at).toLocaleString() + ' (' + img.created_at + ')'],
      ['SHA-256', img.sha256],
    ];
    for (const [k, v] of rows) {
      meta.appendChild(el('dt', { text: k }));
      meta.appendChild(el('dd', { text: v }));
    }
    for (const name of Object.keys(img.variants || {})) {
      meta.appendChild(el('dt', { text: 'Variant' }));
      meta.appendChild(el('dd', {}, [el('a', { href: img.variants[name], text: name })]));
    }
    shareRows($('image-share'), img);
    const actions = $('image-actions');
    actions.textContent = '';
    if (tokenOf(img.id) !== null) {
      const note = el('span', { class: 'deleted-note', role: 'status' });
      actions.appendChild(deleteButton(img.id, note, () => {
        body.hidden = true;
        status.textContent = 'Image deleted.';
      }));
      actions.appendChild(note);
    }
    body.hidden = false;
  }

  /* --- views and routing (#/, #/gallery, #/i/ID) --- */

  function show(name) {
    for (const v of ['upload', 'gallery', 'image']) $('view-' + v).hidden = v !== name;
    $('nav-upload').toggleAttribute('aria-current', name === 'upload');
    $('nav-gallery').toggleAttribute('aria-current', name === 'gallery');
    if (name === 'upload') $('nav-upload').setAttribute('aria-current', 'page');
    if (name === 'gallery') $('nav-gallery').setAttribute('aria-current', 'page');
  }

  function route() {
    const h = location.hash;
    const m = /^#\/i\/([A-Za-z0-9_-]{1,64})$/.exec(h);
    if (m) {
      show('image');
      imageShow(m[1]);
    } else if (h === '#/gallery') {
      show('gallery');
      galleryReset();
    } else {
      show('upload');
    }
    document.title = 'Tessera' + (m ? ' · image ' + m[1] : h === '#/gallery' ? ' · gallery' : '');
  }

  window.addEventListener('hashchange', () => {
    route();
    $('main').focus({ preventScroll: true });
  });
  route();
})();
